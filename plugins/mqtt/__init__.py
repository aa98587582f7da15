"""The `mqtt` driver: Tasmota plugs, Zigbee2MQTT lights, Shelly gen2 relays, generic topics.

One module per job: options.py (the `mqtt:` section and each protocol's options),
device.py (what all devices share), one module per firmware dialect (tasmota.py,
zigbee2mqtt.py, shelly.py, generic.py) and driver.py (the paho client and the Driver).
"""

from troupe.plugins.mqtt.driver import CONNECT_WAIT_S, KEEPALIVE_S, MqttDriver
from troupe.plugins.mqtt.options import PROTOCOLS, DeviceOptions, Settings

__all__ = ["CONNECT_WAIT_S", "KEEPALIVE_S", "PROTOCOLS", "DeviceOptions", "MqttDriver", "Settings"]

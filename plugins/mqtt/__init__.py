"""The `mqtt` driver: Tasmota plugs, Zigbee2MQTT lights, Shelly gen2 relays, generic topics.

One module per job: options.py (each protocol's options; the `mqtt:` section is
troupe.mqttsettings'), device.py (what all devices share), one module per firmware dialect
(tasmota.py, zigbee2mqtt.py, shelly.py, generic.py) and driver.py (the Driver, on the bot's
shared MQTT client, troupe.mqttclient).
"""

from troupe.plugins.mqtt.driver import CONNECT_WAIT_S, MqttDriver
from troupe.plugins.mqtt.options import PROTOCOLS, DeviceOptions, Settings

__all__ = ["CONNECT_WAIT_S", "PROTOCOLS", "DeviceOptions", "MqttDriver", "Settings"]

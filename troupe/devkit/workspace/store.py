"""The workspace's state: channels, users, messages, threads, pins and reactions.

Pure state, no HTTP: the Web API, the control API and the chat page all change the
workspace through this one object, which raises `SlackError` exactly where Slack answers
an error and hands every change to `publish` as Slack's inner event dict. With a state
path, messages, pins and reactions are kept in SQLite (WAL) across restarts.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import re
import sqlite3
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from troupe.devkit.workspace.config import App, Channel, WorkspaceConfig
from troupe.devkit.workspace.errors import SlackError

Publish = Callable[..., None]
Message = dict[str, Any]

MAX_TEXT = 40_000
CREATED = 1_704_067_200
"""When every configured channel and user was 'created' (2024-01-01): stable across runs."""

_TS = re.compile(r"^\d{1,12}\.\d{6}$")
_EMOJI_NAME = re.compile(r"^[a-z0-9_+\-']+$")
_SKIN = re.compile(r"^(?P<base>[^:]+)::skin-tone-[2-6]$")

EMOJI_ALIASES = {"thumbsup": "+1", "thumbsdown": "-1", "satisfied": "laughing", "poop": "hankey"}
"""Slack files a reaction under one canonical name: reacting `thumbsup` shows `+1`."""

_EMOJI_NAMES = """
    +1 -1 100 1234 8ball a ab abc abcd accept admission_tickets aerial_tramway airplane
    alarm_clock alembic alien ambulance anchor angel anger angry anguished ant apple
    aquarius aries arrow_backward arrow_double_down arrow_double_up arrow_down
    arrow_down_small arrow_forward arrow_heading_down arrow_heading_up arrow_left
    arrow_lower_left arrow_lower_right arrow_right arrow_right_hook arrow_up arrow_up_down
    arrow_up_small arrow_upper_left arrow_upper_right arrows_clockwise
    arrows_counterclockwise art articulated_lorry astonished athletic_shoe atm b baby
    baby_bottle back badminton_racquet_and_shuttlecock baggage_claim balloon ballot_box
    ballot_box_with_check bamboo banana bangbang bank bar_chart barber baseball basketball
    bath bathtub battery bear bee beer beers beetle beginner bell bento bicyclist bike bird
    birthday black_circle black_heart black_large_square black_small_square blossom blowfish
    blue_book blue_car blue_heart blush boar boat bomb book bookmark bookmark_tabs books
    boom boot bouquet bow bowling boy bread bride_with_veil bridge_at_night briefcase
    broken_heart bug building_construction bulb bullettrain_front bullettrain_side bus
    busstop bust_in_silhouette busts_in_silhouette butterfly cactus cake calendar calling
    camel camera camping cancer candle candy capital_abcd capricorn car card_index
    carousel_horse cat cat2 cd chart chart_with_downwards_trend chart_with_upwards_trend
    checkered_flag cherries cherry_blossom chestnut chicken children_crossing chocolate_bar
    christmas_tree church cinema circus_tent city_sunrise city_sunset cl clap clapper
    clipboard clock1 clock10 clock11 clock12 clock130 clock2 clock3 clock4 clock5 clock6
    clock7 clock8 clock9 closed_book closed_lock_with_key closed_umbrella cloud clown_face
    clubs cocktail coffee cold_sweat collision computer confetti_ball confounded confused
    congratulations construction construction_worker control_knobs convenience_store cookie
    cool cop copyright corn couch_and_lamp couple cow cow2 crab credit_card crescent_moon
    cricket crocodile crossed_fingers crossed_flags crown cry crying_cat_face crystal_ball
    cupid curly_loop currency_exchange curry custard customs cyclone dagger_knife dancer
    dancers dango dark_sunglasses dart dash date deciduous_tree department_store desert
    desktop_computer diamond_shape_with_a_dot_inside diamonds disappointed
    disappointed_relieved dizzy dizzy_face do_not_litter dog dog2 dollar dolls dolphin door
    doughnut dove_of_peace dragon dragon_face dress dromedary_camel droplet dvd e-mail ear
    ear_of_rice earth_africa earth_americas earth_asia egg eggplant eight
    eight_pointed_black_star eight_spoked_asterisk electric_plug elephant email end envelope
    envelope_with_arrow euro european_castle european_post_office evergreen_tree exclamation
    expressionless eye eyeglasses eyes face_palm face_with_monocle face_with_rolling_eyes
    face_with_thermometer facepunch factory fallen_leaf family fast_forward fax fearful feet
    female_sign ferris_wheel field_hockey_stick_and_ball file_cabinet file_folder
    film_frames fire fire_engine fireworks first_place_medal fish fish_cake
    fishing_pole_and_fish fist five flag-gb flag-us flags flashlight floppy_disk
    flower_playing_cards flushed fog foggy football footprints fork_and_knife fountain four
    four_leaf_clover fox_face free fried_shrimp fries frog frowning fuelpump full_moon
    full_moon_with_face game_die gear gem gemini ghost gift gift_heart girl
    globe_with_meridians goat golf grapes green_apple green_book green_heart
    grey_exclamation grey_question grimacing grin grinning guardsman guitar gun haircut
    hamburger hammer hammer_and_pick hammer_and_wrench hamster hand handbag hankey hash
    hatched_chick hatching_chick headphones hear_no_evil heart heart_decoration heart_eyes
    heart_eyes_cat heartbeat heartpulse hearts heavy_check_mark heavy_division_sign
    heavy_dollar_sign heavy_exclamation_mark heavy_heart_exclamation_mark_ornament
    heavy_minus_sign heavy_multiplication_x heavy_plus_sign helicopter herb hibiscus
    high_brightness high_heel hocho hole honey_pot horse horse_racing hospital hot_pepper
    hotel hotsprings hourglass hourglass_flowing_sand house house_buildings
    house_with_garden hugging_face hushed ice_cream ice_hockey_stick_and_puck icecream id
    ideograph_advantage imp inbox_tray incoming_envelope information_desk_person
    information_source innocent interrobang iphone izakaya_lantern jack_o_lantern japan
    japanese_castle japanese_goblin japanese_ogre jeans joy joy_cat joystick key keyboard
    keycap_ten kimono kiss kissing kissing_cat kissing_closed_eyes kissing_heart
    kissing_smiling_eyes koala koko label lady_beetle lantern large_blue_circle
    large_blue_diamond large_orange_diamond last_quarter_moon last_quarter_moon_with_face
    laughing leaves ledger left_right_arrow leftwards_arrow_with_hook lemon leo leopard
    level_slider libra light_rail lightning link linked_paperclips lips lipstick lock
    lock_with_ink_pen lollipop loop loud_sound loudspeaker love_hotel love_letter
    low_brightness lower_left_ballpoint_pen lying_face m mag mag_right mahjong mailbox
    mailbox_closed mailbox_with_mail mailbox_with_no_mail male_sign man mans_shoe maple_leaf
    mask massage meat_on_bone medal mega melon memo mens metro microphone microscope
    middle_finger milky_way minibus minidisc mobile_phone_off money_mouth_face
    money_with_wings moneybag monkey monkey_face monorail moon mortar_board mosque
    motor_boat motorcycle mount_fuji mountain mountain_bicyclist mountain_cableway
    mountain_railway mouse mouse2 movie_camera moyai muscle mushroom musical_keyboard
    musical_note musical_score mute nail_care name_badge necktie negative_squared_cross_mark
    nerd_face neutral_face new new_moon new_moon_with_face newspaper ng night_with_stars
    nine no_bell no_bicycles no_entry no_entry_sign no_good no_mobile_phones no_mouth
    no_pedestrians no_smoking non-potable_water nose notebook notebook_with_decorative_cover
    notes nut_and_bolt o o2 ocean octagonal_sign octopus oden office ok ok_hand ok_woman
    older_man older_woman on oncoming_automobile oncoming_bus oncoming_police_car
    oncoming_taxi one open_book open_file_folder open_hands open_mouth ophiuchus orange_book
    outbox_tray ox package page_facing_up page_with_curl pager palm_tree panda_face
    paperclip parking part_alternation_mark partly_sunny partying_face passport_control
    paw_prints peach pear pencil pencil2 penguin pensive performing_arts persevere
    person_frowning person_with_blond_hair person_with_pouting_face phone pick pig pig2
    pig_nose pill pineapple pisces pizza place_of_worship point_down point_left point_right
    point_up point_up_2 police_car poodle popcorn post_office postal_horn postbox
    potable_water pouch poultry_leg pound pouting_cat pray prayer_beads princess printer
    punch purple_heart purse pushpin put_litter_in_its_place question rabbit rabbit2
    racehorse racing_car radio radio_button rage rage1 rage2 rage3 rage4 railway_car rainbow
    raised_hand raised_hands raising_hand ram ramen rat recycle red_car red_circle
    registered relaxed relieved repeat repeat_one restroom revolving_hearts rewind ribbon
    rice rice_ball rice_cracker rice_scene ring robot_face rocket
    rolling_on_the_floor_laughing roller_coaster rooster rose rotating_light round_pushpin
    rowboat rugby_football runner running running_shirt_with_sash sa sagittarius sailboat
    sake sandal santa satellite satellite_antenna saxophone school school_satchel scissors
    scorpius scream scream_cat scroll seat second_place_medal secret see_no_evil seedling
    seven shaved_ice sheep shell shield ship shirt shopping_bags shower shrug
    sign_of_the_horns signal_strength simple_smile six six_pointed_star ski skin-tone-2
    skin-tone-3 skin-tone-4 skin-tone-5 skin-tone-6 skull sleeping sleepy
    slightly_frowning_face slightly_smiling_face slot_machine small_blue_diamond
    small_orange_diamond small_red_triangle small_red_triangle_down smile smile_cat smiley
    smiley_cat smiling_imp smirk smirk_cat smoking snail snake sneezing_face snowboarder
    snowflake snowman snowman_without_snow sob soccer soon sos sound space_invader spades
    spaghetti sparkle sparkler sparkles sparkling_heart speak_no_evil speaker speech_balloon
    speedboat spiral_calendar_pad spiral_note_pad stadium star star-struck star2 stars
    station statue_of_liberty steam_locomotive stew stopwatch straight_ruler strawberry
    stuck_out_tongue stuck_out_tongue_closed_eyes stuck_out_tongue_winking_eye sun_with_face
    sunflower sunglasses sunny sunrise sunrise_over_mountains surfer sushi
    suspension_railway sweat sweat_drops sweat_smile sweet_potato swimmer symbols syringe
    table_tennis_paddle_and_ball tada tanabata_tree tangerine taurus taxi tea telephone
    telephone_receiver telescope tennis tent the_horns thermometer thinking_face
    third_place_medal thought_balloon three thunder_cloud_and_rain ticket tiger tiger2
    timer_clock tired_face tm toilet tokyo_tower tomato tongue tools top tophat tractor
    traffic_light train train2 tram triangular_flag_on_post triangular_ruler trident triumph
    trolleybus trophy tropical_drink tropical_fish truck trumpet tshirt tulip turtle tv
    twisted_rightwards_arrows two two_hearts two_men_holding_hands two_women_holding_hands
    u5272 u5408 u55b6 u6307 u6708 u6709 u6e80 u7121 u7533 u7981 u7a7a umbrella
    umbrella_with_rain_drops unamused underage unicorn_face unlock up upside_down_face v
    vertical_traffic_light vhs vibration_mode video_camera video_game violin virgo volcano
    volleyball vs walking waning_crescent_moon waning_gibbous_moon warning wastebasket watch
    water_buffalo watermelon wave wavy_dash waxing_crescent_moon waxing_gibbous_moon wc
    weary wedding whale whale2 wheel_of_dharma wheelchair white_check_mark white_circle
    white_flower white_frowning_face white_large_square white_medium_small_square
    white_medium_square white_small_square white_square_button wind_blowing_face wind_chime
    wine_glass wink wolf woman womans_clothes womans_hat womens worried wrench writing_hand
    x yellow_heart yen yin_yang yum zap zero zipper_mouth_face zzz
"""
KNOWN_EMOJI = frozenset(_EMOJI_NAMES.split())
"""Emoji names this workspace accepts as reactions; Slack answers invalid_name for others."""


def ts_key(ts: str) -> tuple[int, int]:
    """Sort key of a well-formed message ts ("seconds.micros")."""
    sec, _, micro = ts.partition(".")
    return int(sec), int(micro)


def is_ts(value: object) -> bool:
    """Whether a value is a well-formed message timestamp."""
    return isinstance(value, str) and bool(_TS.match(value))


def _listed(message: Message) -> bool:
    """Whether conversations.history lists a message: top level, or a reply also sent to
    the channel."""
    ts = message["ts"]
    return message.get("thread_ts", ts) == ts or message.get("subtype") == "thread_broadcast"


def parse_time(value: str | None, error: str) -> Decimal | None:
    """A latest/oldest bound ("1700000000", "1700000000.000100"), or SlackError(error)."""
    if value is None or value == "":
        return None
    try:
        number = Decimal(value)
    except InvalidOperation as err:
        raise SlackError(error) from err
    if not number.is_finite() or number < 0:
        raise SlackError(error)
    return number


def encode_cursor(kind: str, value: str) -> str:
    """A Slack-style opaque cursor, e.g. base64("next_ts:1700000000.000100")."""
    return base64.b64encode(f"{kind}:{value}".encode()).decode()


def decode_cursor(cursor: str | None, kind: str) -> str | None:
    """The value inside a cursor made by `encode_cursor`; invalid_cursor for anything else."""
    if not cursor:
        return None
    try:
        text = base64.b64decode(cursor.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as err:
        raise SlackError("invalid_cursor") from err
    prefix, sep, value = text.partition(":")
    if prefix != kind or not sep or not value:
        raise SlackError("invalid_cursor")
    return value


def reaction_name(name: str) -> str:
    """Slack's canonical name of a reaction, or SlackError("invalid_name")."""
    name = name.strip().strip(":") if isinstance(name, str) else ""
    skin = _SKIN.match(name)
    base = skin.group("base") if skin else name
    if not base or not _EMOJI_NAME.match(base):
        raise SlackError("invalid_name")
    canonical = EMOJI_ALIASES.get(base, base)
    if canonical not in KNOWN_EMOJI or canonical.startswith("skin-tone-"):
        raise SlackError("invalid_name")
    return canonical + name[len(base) :] if skin else canonical


class _Sqlite:
    """Write-through persistence of messages, pins, joins and DMs in one SQLite file."""

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS messages (
            channel TEXT NOT NULL, ts TEXT NOT NULL, body TEXT NOT NULL,
            PRIMARY KEY (channel, ts));
        CREATE TABLE IF NOT EXISTS pins (
            channel TEXT NOT NULL, ts TEXT NOT NULL, created INTEGER NOT NULL,
            created_by TEXT NOT NULL, PRIMARY KEY (channel, ts));
        CREATE TABLE IF NOT EXISTS joins (
            channel TEXT NOT NULL, user TEXT NOT NULL, PRIMARY KEY (channel, user));
        CREATE TABLE IF NOT EXISTS ims (id TEXT PRIMARY KEY, users TEXT NOT NULL);
    """

    def __init__(self, path: str | Path) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(self.SCHEMA)

    def messages(self) -> list[tuple[str, Message]]:
        rows = self.db.execute("SELECT channel, body FROM messages").fetchall()
        return [(channel, json.loads(body)) for channel, body in rows]

    def pins(self) -> list[tuple[str, str, int, str]]:
        return self.db.execute("SELECT channel, ts, created, created_by FROM pins").fetchall()

    def joins(self) -> list[tuple[str, str]]:
        return self.db.execute("SELECT channel, user FROM joins").fetchall()

    def ims(self) -> list[tuple[str, list[str]]]:
        rows = self.db.execute("SELECT id, users FROM ims").fetchall()
        return [(im_id, json.loads(users)) for im_id, users in rows]

    def save_message(self, channel: str, message: Message) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO messages (channel, ts, body) VALUES (?, ?, ?)",
            (channel, message["ts"], json.dumps(message)),
        )

    def delete_message(self, channel: str, ts: str) -> None:
        self.db.execute("DELETE FROM messages WHERE channel = ? AND ts = ?", (channel, ts))

    def save_pin(self, channel: str, ts: str, created: int, created_by: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO pins VALUES (?, ?, ?, ?)", (channel, ts, created, created_by)
        )

    def delete_pin(self, channel: str, ts: str) -> None:
        self.db.execute("DELETE FROM pins WHERE channel = ? AND ts = ?", (channel, ts))

    def save_join(self, channel: str, user: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO joins VALUES (?, ?)", (channel, user))

    def save_im(self, im_id: str, users: list[str]) -> None:
        self.db.execute("INSERT OR IGNORE INTO ims VALUES (?, ?)", (im_id, json.dumps(users)))

    def close(self) -> None:
        self.db.close()


class Store:
    """Everything a workspace holds, changed only through these methods.

    Methods take Slack ids (channel "C…"/"D…", user "U…"), return plain dicts shaped like
    Slack's objects (always copies) and raise SlackError(code) where Slack would.
    """

    def __init__(
        self,
        config: WorkspaceConfig,
        state_path: str | Path | None = None,
        publish: Publish | None = None,
    ) -> None:
        self.config = config
        self.publish: Publish = publish or (lambda event, *, channel: None)
        self._channels: dict[str, Channel] = {c.id: c for c in config.channels}
        self._apps_by_id: dict[str, App] = {a.id: a for a in config.apps}
        self._apps_by_user: dict[str, App] = {a.bot_user_id: a for a in config.apps}
        self._apps_by_bot: dict[str, App] = {a.bot_id: a for a in config.apps}
        self._everybody = [h.id for h in config.humans] + [a.bot_user_id for a in config.apps]
        self._joined: dict[str, set[str]] = {}
        self._ims: dict[str, list[str]] = {}
        self._messages: dict[str, dict[str, Message]] = {}
        self._top: dict[str, list[str]] = {}
        """Per channel, what conversations.history lists (top-level messages and replies
        sent to the channel too), in ts order: messages are only ever appended newest."""
        self._replies: dict[tuple[str, str], list[str]] = {}
        self._pins: dict[str, dict[str, tuple[int, str]]] = {}
        self._last_us = 0
        self._db = _Sqlite(state_path) if state_path else None
        if self._db:
            self._load(self._db)

    def _load(self, db: _Sqlite) -> None:
        for channel, user in db.joins():
            self._joined.setdefault(channel, set()).add(user)
        for im_id, users in db.ims():
            self._ims[im_id] = users
        loaded = sorted(db.messages(), key=lambda row: ts_key(row[1]["ts"]))
        for channel, message in loaded:
            ts = message["ts"]
            self._messages.setdefault(channel, {})[ts] = message
            if _listed(message):
                self._top.setdefault(channel, []).append(ts)
            parent = message.get("thread_ts")
            if parent and parent != ts:
                self._replies.setdefault((channel, parent), []).append(ts)
            self._last_us = max(self._last_us, self._micros(ts))
        for channel, ts, created, created_by in db.pins():
            self._pins.setdefault(channel, {})[ts] = (created, created_by)

    def close(self) -> None:
        """Flush and close the state file, if any."""
        if self._db:
            self._db.close()
            self._db = None

    # --- timestamps -------------------------------------------------------------------

    @staticmethod
    def _micros(ts: str) -> int:
        sec, micro = ts_key(ts)
        return sec * 1_000_000 + micro

    def next_ts(self) -> str:
        """A fresh ts, unique and strictly increasing across the whole workspace."""
        now = time.time_ns() // 1000
        self._last_us = max(now, self._last_us + 1)
        sec, micro = divmod(self._last_us, 1_000_000)
        return f"{sec}.{micro:06d}"

    # --- users ------------------------------------------------------------------------

    def users(self) -> list[dict[str, Any]]:
        """Every human and bot user, as users.list members."""
        return [self.user(uid) for uid in self._everybody]

    def user(self, user_id: str) -> dict[str, Any]:
        """A Slack user object; user_not_found for an unknown id."""
        team = self.config.team.id
        for human in self.config.humans:
            if human.id == user_id:
                real = human.real_name or human.name
                user = self._user_obj(
                    human.id, human.name, real, human.team_id or team, is_admin=human.is_admin
                )
                user.update(
                    is_restricted=human.guest is not None,
                    is_ultra_restricted=human.guest == "single",
                )
                return user
        app = self._apps_by_user.get(user_id)
        if app is None:
            raise SlackError("user_not_found")
        user = self._user_obj(app.bot_user_id, app.name, app.name, team, is_admin=False)
        user["is_bot"] = True
        user["profile"].update(bot_id=app.bot_id, api_app_id=app.id, always_active=True)
        return user

    @staticmethod
    def _user_obj(uid: str, name: str, real: str, team: str, *, is_admin: bool) -> dict[str, Any]:
        color = hashlib.sha1(uid.encode()).hexdigest()[:6]
        images = {
            f"image_{n}": f"https://a.slack-edge.com/avatars/{uid}_{n}.png"
            for n in (24, 32, 48, 72, 192, 512)
        }
        return {
            "id": uid,
            "team_id": team,
            "name": name,
            "deleted": False,
            "color": color,
            "real_name": real,
            "tz": "Europe/London",
            "tz_label": "Greenwich Mean Time",
            "tz_offset": 0,
            "profile": {
                "title": "",
                "phone": "",
                "skype": "",
                "real_name": real,
                "real_name_normalized": real,
                "display_name": name,
                "display_name_normalized": name,
                "status_text": "",
                "status_emoji": "",
                "status_expiration": 0,
                "avatar_hash": color,
                "first_name": real.split(" ")[0],
                "last_name": " ".join(real.split(" ")[1:]),
                "team": team,
                **images,
            },
            "is_admin": is_admin,
            "is_owner": is_admin,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": False,
            "is_app_user": False,
            "updated": CREATED,
            "is_email_confirmed": True,
        }

    def resolve_user(self, ref: str) -> str:
        """A user id from an id or a name (humans and apps' bot users); user_not_found."""
        for uid in self._everybody:
            if ref == uid:
                return uid
        for human in self.config.humans:
            if ref.lstrip("@") == human.name:
                return human.id
        for app in self.config.apps:
            if ref.lstrip("@") == app.name:
                return app.bot_user_id
        raise SlackError("user_not_found")

    def app_for_user(self, user_id: str) -> App | None:
        """The app whose bot user this is, if any."""
        return self._apps_by_user.get(user_id)

    def bot(self, bot_id: str) -> dict[str, Any]:
        """A bots.info bot object; bot_not_found."""
        app = self._apps_by_bot.get(bot_id)
        if app is None:
            raise SlackError("bot_not_found")
        return {
            "id": app.bot_id,
            "deleted": False,
            "name": app.name,
            "updated": CREATED,
            "app_id": app.id,
            "user_id": app.bot_user_id,
            "icons": self._icons(app),
        }

    @staticmethod
    def _icons(app: App) -> dict[str, str]:
        return {
            f"image_{n}": f"https://a.slack-edge.com/bots/{app.id}_{n}.png" for n in (36, 48, 72)
        }

    def bot_profile(self, app: App) -> dict[str, Any]:
        """The bot_profile Slack attaches to a bot's messages."""
        return {
            "id": app.bot_id,
            "deleted": False,
            "name": app.name,
            "updated": CREATED,
            "app_id": app.id,
            "icons": self._icons(app),
            "team_id": self.config.team.id,
        }

    # --- channels ---------------------------------------------------------------------

    def resolve_channel(self, ref: str, *, user: str | None = None) -> str:
        """A conversation id from an id, "#name" or "name" (or a user id: the DM with
        `user`, as chat.postMessage allows); channel_not_found otherwise."""
        if ref in self._channels or ref in self._ims:
            return ref
        name = ref.removeprefix("#")
        for channel in self._channels.values():
            if channel.name == name:
                return channel.id
        if user and not ref.startswith("#") and ref in self._everybody:
            return self.open_im(user, ref)
        raise SlackError("channel_not_found")

    def channels(self, *, for_user: str | None = None) -> list[dict[str, Any]]:
        """Every conversation; with `for_user`, only public channels, the private channels
        that user is in and that user's DMs (each with is_member)."""
        out = []
        for channel in self._channels.values():
            if channel.is_private and for_user and not self.is_member(for_user, channel.id):
                continue
            out.append(self.channel(channel.id, for_user=for_user))
        for im_id, users in self._ims.items():
            if for_user is None or for_user in users:
                out.append(self.channel(im_id, for_user=for_user))
        return out

    def channel(self, channel_id: str, *, for_user: str | None = None) -> dict[str, Any]:
        """A conversation object; channel_not_found, also for a private channel or DM that
        `for_user` is not in."""
        if channel_id in self._ims:
            users = self._ims[channel_id]
            if for_user is not None and for_user not in users:
                raise SlackError("channel_not_found")
            other = next((u for u in users if u != for_user), users[0])
            return {
                "id": channel_id,
                "created": CREATED,
                "is_archived": False,
                "is_im": True,
                "is_org_shared": False,
                "context_team_id": self.config.team.id,
                "updated": CREATED,
                "user": other,
                "is_user_deleted": False,
                "priority": 0,
            }
        conf = self._channels.get(channel_id)
        if conf is None:
            raise SlackError("channel_not_found")
        if conf.is_private and for_user is not None and not self.is_member(for_user, channel_id):
            raise SlackError("channel_not_found")
        team = self.config.team.id
        obj: dict[str, Any] = {
            "id": conf.id,
            "name": conf.name,
            "is_channel": not conf.is_private,
            "is_group": conf.is_private,
            "is_im": False,
            "is_mpim": False,
            "is_private": conf.is_private,
            "created": CREATED,
            "is_archived": False,
            "is_general": conf.id == self.config.channels[0].id,
            "unlinked": 0,
            "name_normalized": conf.name,
            "is_shared": False,
            "is_org_shared": False,
            "is_ext_shared": False,
            "is_pending_ext_shared": False,
            "pending_shared": [],
            "context_team_id": team,
            "updated": CREATED,
            "parent_conversation": None,
            "creator": "",
            "shared_team_ids": [team],
            "pending_connected_team_ids": [],
            "topic": {"value": conf.topic, "creator": "", "last_set": CREATED if conf.topic else 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
            "previous_names": [],
            "num_members": len(self.channel_members(conf.id)),
        }
        if for_user is not None:
            obj["is_member"] = self.is_member(for_user, conf.id)
        return obj

    def channel_type(self, channel_id: str) -> str:
        """The channel_type of events: "channel", "group" (private) or "im"."""
        if channel_id in self._ims:
            return "im"
        conf = self._channels.get(channel_id)
        return "group" if conf is not None and conf.is_private else "channel"

    def channel_members(self, channel_id: str) -> list[str]:
        """The user ids in a conversation; channel_not_found."""
        if channel_id in self._ims:
            return list(dict.fromkeys(self._ims[channel_id]))
        conf = self._channels.get(channel_id)
        if conf is None:
            raise SlackError("channel_not_found")
        base = self._everybody if conf.members is None else list(conf.members)
        extra = [u for u in self._everybody if u in self._joined.get(channel_id, set())]
        return list(dict.fromkeys(base + extra))

    def is_member(self, user: str, channel: str) -> bool:
        """Whether a user is in a conversation (False for an unknown one)."""
        try:
            return user in self.channel_members(channel)
        except SlackError:
            return False

    def join(self, user: str, channel: str) -> bool:
        """Put a user in a public channel; True if they were not in it yet.

        channel_not_found; method_not_supported_for_channel_type for private channels and
        DMs, which one must be invited to.
        """
        conf = self._channels.get(channel)
        if conf is None:
            if channel in self._ims:
                raise SlackError("method_not_supported_for_channel_type")
            raise SlackError("channel_not_found")
        if self.is_member(user, channel):
            return False
        if conf.is_private:
            raise SlackError("method_not_supported_for_channel_type")
        self._joined.setdefault(channel, set()).add(user)
        if self._db:
            self._db.save_join(channel, user)
        event = {
            "type": "member_joined_channel",
            "user": user,
            "channel": channel,
            "channel_type": "C",
            "team": self.config.team.id,
            "event_ts": self.next_ts(),
        }
        self.publish(event, channel=channel)
        return True

    def open_im(self, user: str, other: str) -> str:
        """The DM between two users (created on first use); user_not_found."""
        if other not in self._everybody or user not in self._everybody:
            raise SlackError("user_not_found")
        pair = sorted({user, other})
        im_id = self.im_id(user, other)
        if im_id not in self._ims:
            self._ims[im_id] = pair
            if self._db:
                self._db.save_im(im_id, pair)
        return im_id

    @staticmethod
    def im_id(user: str, other: str) -> str:
        """The id of the DM between two users (the same every run)."""
        pair = sorted({user, other})
        return "D" + hashlib.sha1("|".join(pair).encode()).hexdigest()[:10].upper()

    def has_im(self, im_id: str) -> bool:
        """Whether a DM has been opened."""
        return im_id in self._ims

    # --- messages ---------------------------------------------------------------------

    def _require_channel(self, channel: str) -> None:
        if channel not in self._channels and channel not in self._ims:
            raise SlackError("channel_not_found")

    def _get(self, channel: str, ts: str, error: str = "message_not_found") -> Message:
        message = self._messages.get(channel, {}).get(ts)
        if message is None:
            raise SlackError(error)
        return message

    def _save(self, channel: str, message: Message) -> None:
        if self._db:
            self._db.save_message(channel, message)

    def message(self, channel: str, ts: str) -> Message:
        """One message (a copy); channel_not_found, message_not_found."""
        self._require_channel(channel)
        return copy.deepcopy(self._get(channel, ts))

    def post_message(
        self,
        *,
        user: str,
        channel: str,
        text: str | None,
        thread_ts: str | None = None,
        reply_broadcast: bool = False,
        app_id: str | None = None,
        bot_id: str | None = None,
        blocks: list[Any] | None = None,
        attachments: list[Any] | None = None,
    ) -> Message:
        """Post a message (or a thread reply) and publish Slack's `message` event.

        channel_not_found, not_in_channel, no_text, msg_too_long, thread_not_found.
        """
        self._require_channel(channel)
        if user not in self._everybody:
            raise SlackError("user_not_found")
        if not self.is_member(user, channel):
            raise SlackError("not_in_channel")
        if not text and not blocks and not attachments:
            raise SlackError("no_text")
        text = text or ""
        if len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        parent: Message | None = None
        if thread_ts:
            parent = self._messages.get(channel, {}).get(thread_ts)
            if parent is None:
                raise SlackError("thread_not_found")
            if parent.get("thread_ts") and parent["thread_ts"] != parent["ts"]:
                parent = self._get(channel, parent["thread_ts"], "thread_not_found")
        app = self._apps_by_id.get(app_id) if app_id else self._apps_by_user.get(user)
        if app is None and bot_id:
            app = self._apps_by_bot.get(bot_id)
        ts = self.next_ts()
        message: Message = {"user": user, "type": "message", "ts": ts}
        if app is not None:
            message.update(bot_id=app.bot_id, app_id=app.id)
        message.update(text=text, team=self.config.team.id)
        outside = next((h.team_id for h in self.config.humans if h.id == user and h.team_id), None)
        if outside:  # Slack Connect: the author's own team, as Slack tells it
            message.update(team=outside, user_team=outside, source_team=outside)
        if app is not None:
            message["bot_profile"] = self.bot_profile(app)
        if blocks:
            message["blocks"] = blocks
        if attachments:
            message["attachments"] = attachments
        if parent is not None:
            message["thread_ts"] = parent["ts"]
            message["parent_user_id"] = parent.get("user", "")
            if reply_broadcast:
                message["subtype"] = "thread_broadcast"
                message["root"] = copy.deepcopy(parent)
        self._messages.setdefault(channel, {})[ts] = message
        if _listed(message):
            self._top.setdefault(channel, []).append(ts)
        self._save(channel, message)
        if parent is not None:
            self._replies.setdefault((channel, parent["ts"]), []).append(ts)
            self._refresh_thread(channel, parent)
        event = copy.deepcopy(message)
        event.update(channel=channel, event_ts=ts, channel_type=self.channel_type(channel))
        self.publish(event, channel=channel)
        return copy.deepcopy(message)

    def _refresh_thread(self, channel: str, parent: Message) -> None:
        """Recompute a parent's reply_count, reply_users and latest_reply."""
        replies = [
            self._messages[channel][ts]
            for ts in self._replies.get((channel, parent["ts"]), [])
            if ts in self._messages.get(channel, {})
        ]
        if replies:
            users = list(dict.fromkeys(r.get("user", "") for r in replies))
            parent.update(
                thread_ts=parent["ts"],
                reply_count=len(replies),
                reply_users_count=len(users),
                latest_reply=replies[-1]["ts"],
                reply_users=users[:5],
                is_locked=False,
            )
        else:
            for key in ("reply_count", "reply_users_count", "latest_reply", "reply_users"):
                parent.pop(key, None)
            parent.pop("is_locked", None)
            parent.pop("thread_ts", None)
        self._save(channel, parent)

    def update_message(
        self,
        *,
        user: str,
        channel: str,
        ts: str,
        text: str | None,
        blocks: list[Any] | None = None,
        attachments: list[Any] | None = None,
    ) -> Message:
        """Edit one's own message; publishes a message_changed event.

        channel_not_found, message_not_found, cant_update_message, no_text, msg_too_long.
        """
        self._require_channel(channel)
        message = self._get(channel, ts)
        if message.get("user") != user:
            raise SlackError("cant_update_message")
        if not text and not blocks and not attachments:
            raise SlackError("no_text")
        if text and len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        previous = copy.deepcopy(message)
        message["text"] = text or ""
        for key, value in (("blocks", blocks), ("attachments", attachments)):
            if value is not None:
                message[key] = value
        event_ts = self.next_ts()
        message["edited"] = {"user": user, "ts": event_ts}
        self._save(channel, message)
        event = {
            "type": "message",
            "subtype": "message_changed",
            "hidden": True,
            "message": copy.deepcopy(message),
            "channel": channel,
            "previous_message": previous,
            "event_ts": event_ts,
            "ts": event_ts,
            "channel_type": self.channel_type(channel),
        }
        self.publish(event, channel=channel)
        return copy.deepcopy(message)

    def delete_message(
        self, *, user: str, channel: str, ts: str, as_admin: bool = False
    ) -> Message:
        """Delete one's own message (any message `as_admin`); publishes message_deleted.

        channel_not_found, message_not_found, cant_delete_message.
        """
        self._require_channel(channel)
        message = self._get(channel, ts)
        if message.get("user") != user and not as_admin:
            raise SlackError("cant_delete_message")
        del self._messages[channel][ts]
        if _listed(message):
            self._top[channel].remove(ts)
        if self._db:
            self._db.delete_message(channel, ts)
        if ts in self._pins.get(channel, {}):
            del self._pins[channel][ts]
            if self._db:
                self._db.delete_pin(channel, ts)
        parent_ts = message.get("thread_ts")
        if parent_ts and parent_ts != ts and parent_ts in self._messages.get(channel, {}):
            self._replies[(channel, parent_ts)].remove(ts)
            self._refresh_thread(channel, self._messages[channel][parent_ts])
        event_ts = self.next_ts()
        event = {
            "type": "message",
            "subtype": "message_deleted",
            "hidden": True,
            "deleted_ts": ts,
            "channel": channel,
            "previous_message": copy.deepcopy(message),
            "event_ts": event_ts,
            "ts": event_ts,
            "channel_type": self.channel_type(channel),
        }
        self.publish(event, channel=channel)
        return copy.deepcopy(message)

    def _page(
        self,
        candidates: list[str],
        *,
        latest: str | None,
        oldest: str | None,
        inclusive: bool,
        limit: int,
        start: str | None,
        newest_first: bool,
    ) -> tuple[list[str], str | None]:
        """One page of `candidates` (ts in ascending order) between the bounds, and the
        cursor of the next. Bisected, so a read of the last seconds of a long channel costs
        what it costs on Slack (a soak's channel holds tens of thousands of messages, and
        a scan of them all per conversations.history stalled the workspace for seconds)."""
        hi = parse_time(latest, "invalid_ts_latest")
        lo = parse_time(oldest, "invalid_ts_oldest")
        if start is not None and not is_ts(start):
            raise SlackError("invalid_cursor")
        first, end = 0, len(candidates)
        if lo is not None:
            first = (bisect_left if inclusive else bisect_right)(candidates, lo, key=Decimal)
        if hi is not None:
            end = (bisect_right if inclusive else bisect_left)(candidates, hi, key=Decimal)
        limit = max(1, limit)
        if newest_first:
            if start is not None:
                end = min(end, bisect_right(candidates, ts_key(start), key=ts_key))
            page_from = max(first, end - limit)
            page = candidates[page_from:end][::-1]
            return page, (
                encode_cursor("next_ts", candidates[page_from - 1]) if page_from > first else None
            )
        if start is not None:
            first = max(first, bisect_left(candidates, ts_key(start), key=ts_key))
        page_end = min(end, first + limit)
        page = candidates[first:page_end]
        return page, (encode_cursor("next_ts", candidates[page_end]) if page_end < end else None)

    def history(
        self,
        channel: str,
        *,
        latest: str | None = None,
        oldest: str | None = None,
        inclusive: bool = False,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Message], str | None]:
        """Top-level messages (and broadcast replies), newest first, and the next cursor."""
        self._require_channel(channel)
        msgs = self._messages.get(channel, {})
        page, next_cursor = self._page(
            self._top.get(channel, []),
            latest=latest,
            oldest=oldest,
            inclusive=inclusive,
            limit=limit,
            start=decode_cursor(cursor, "next_ts"),
            newest_first=True,
        )
        return [self._with_pins(channel, msgs[ts]) for ts in page], next_cursor

    def replies(
        self,
        channel: str,
        ts: str,
        *,
        latest: str | None = None,
        oldest: str | None = None,
        inclusive: bool = False,
        limit: int = 1000,
        cursor: str | None = None,
    ) -> tuple[list[Message], str | None]:
        """A thread: its parent then replies oldest first (the parent heads every page).

        channel_not_found, thread_not_found. A reply's ts gives just that reply, as Slack.
        """
        self._require_channel(channel)
        message = self._get(channel, ts, "thread_not_found")
        if message.get("thread_ts") and message["thread_ts"] != ts:
            return [self._with_pins(channel, message)], None
        reply_ts = list(self._replies.get((channel, ts), []))
        page, next_cursor = self._page(
            reply_ts,
            latest=latest,
            oldest=oldest,
            inclusive=inclusive,
            limit=max(1, limit - 1),
            start=decode_cursor(cursor, "next_ts"),
            newest_first=False,
        )
        msgs = self._messages[channel]
        return [
            self._with_pins(channel, m) for m in [message, *(msgs[t] for t in page)]
        ], next_cursor

    def threads(self, channel: str) -> dict[str, list[Message]]:
        """Every thread of a channel: its parent's ts -> the replies, oldest first. The
        control API's read-back for the bench and tests (Slack has no such method: there
        it is one conversations.replies per thread, 10,000 of them after a soak)."""
        self._require_channel(channel)
        msgs = self._messages[channel]
        return {
            parent: [dict(msgs[ts]) for ts in replies]
            for (where, parent), replies in self._replies.items()
            if where == channel and replies
        }

    def _with_pins(self, channel: str, message: Message) -> Message:
        out = copy.deepcopy(message)
        if message["ts"] in self._pins.get(channel, {}):
            out["pinned_to"] = [channel]
        return out

    # --- pins -------------------------------------------------------------------------

    def _pin_item(self, channel: str, ts: str) -> dict[str, Any]:
        created, created_by = self._pins[channel][ts]
        return {
            "type": "message",
            "created": created,
            "created_by": created_by,
            "channel": channel,
            "message": self._with_pins(channel, self._messages[channel][ts]),
        }

    def _pin_event(self, kind: str, user: str, channel: str, ts: str, item: dict[str, Any]) -> None:
        pins = self._pins.get(channel, {})
        event: dict[str, Any] = {
            "type": kind,
            "user": user,
            "channel_id": channel,
            "item": item,
            "item_user": item["message"].get("user", ""),
            "pin_count": len(pins),
            "pinned_info": {
                "channel": channel,
                "pinned_by": item["created_by"],
                "pinned_ts": item["created"],
            },
            "event_ts": self.next_ts(),
        }
        if kind == "pin_removed":
            event["has_pins"] = bool(pins)
        self.publish(event, channel=channel)

    def pin(self, user: str, channel: str, ts: str) -> dict[str, Any]:
        """Pin a message; publishes pin_added and returns the pin item.

        channel_not_found, not_in_channel, bad_timestamp, message_not_found, already_pinned,
        too_many_pins (config.pin_limit per channel).
        """
        self._require_channel(channel)
        if not self.is_member(user, channel):
            raise SlackError("not_in_channel")
        if not is_ts(ts):
            raise SlackError("bad_timestamp")
        self._get(channel, ts)
        pins = self._pins.setdefault(channel, {})
        if ts in pins:
            raise SlackError("already_pinned")
        if len(pins) >= self.config.pin_limit:
            raise SlackError("too_many_pins")
        created = int(time.time())
        pins[ts] = (created, user)
        if self._db:
            self._db.save_pin(channel, ts, created, user)
        item = self._pin_item(channel, ts)
        self._pin_event("pin_added", user, channel, ts, item)
        return item

    def unpin(self, user: str, channel: str, ts: str) -> None:
        """Unpin a message; publishes pin_removed.

        channel_not_found, not_in_channel, bad_timestamp, message_not_found, no_pin.
        """
        self._require_channel(channel)
        if not self.is_member(user, channel):
            raise SlackError("not_in_channel")
        if not is_ts(ts):
            raise SlackError("bad_timestamp")
        self._get(channel, ts)
        pins = self._pins.get(channel, {})
        if ts not in pins:
            raise SlackError("no_pin")
        item = self._pin_item(channel, ts)
        del pins[ts]
        if self._db:
            self._db.delete_pin(channel, ts)
        item["message"].pop("pinned_to", None)
        self._pin_event("pin_removed", user, channel, ts, item)

    def pins(self, channel: str) -> list[dict[str, Any]]:
        """The pinned items of a channel, newest pin first; channel_not_found."""
        self._require_channel(channel)
        pins = self._pins.get(channel, {})
        order = sorted(pins, key=lambda ts: (pins[ts][0], ts_key(ts)), reverse=True)
        return [
            self._pin_item(channel, ts) for ts in order if ts in self._messages.get(channel, {})
        ]

    # --- reactions --------------------------------------------------------------------

    def _reaction_event(
        self, kind: str, user: str, name: str, channel: str, message: Message
    ) -> None:
        event = {
            "type": kind,
            "user": user,
            "reaction": name,
            "item_user": message.get("user", ""),
            "item": {"type": "message", "channel": channel, "ts": message["ts"]},
            "event_ts": self.next_ts(),
        }
        self.publish(event, channel=channel)

    def _reactable(self, channel: str, ts: str) -> Message:
        self._require_channel(channel)
        if not is_ts(ts):
            raise SlackError("bad_timestamp")
        return self._get(channel, ts)

    def react(self, user: str, channel: str, ts: str, name: str) -> Message:
        """Add a user's reaction; publishes reaction_added and returns the message.

        channel_not_found, bad_timestamp, message_not_found, invalid_name, already_reacted.
        """
        message = self._reactable(channel, ts)
        name = reaction_name(name)
        reactions = message.setdefault("reactions", [])
        entry = next((r for r in reactions if r["name"] == name), None)
        if entry is None:
            entry = {"name": name, "users": [], "count": 0}
            reactions.append(entry)
        if user in entry["users"]:
            raise SlackError("already_reacted")
        entry["users"].append(user)
        entry["count"] = len(entry["users"])
        self._save(channel, message)
        self._reaction_event("reaction_added", user, name, channel, message)
        return self._with_pins(channel, message)

    def unreact(self, user: str, channel: str, ts: str, name: str) -> Message:
        """Remove a user's reaction; publishes reaction_removed.

        channel_not_found, bad_timestamp, message_not_found, invalid_name, no_reaction.
        """
        message = self._reactable(channel, ts)
        name = reaction_name(name)
        reactions = message.get("reactions", [])
        entry = next((r for r in reactions if r["name"] == name), None)
        if entry is None or user not in entry["users"]:
            raise SlackError("no_reaction")
        entry["users"].remove(user)
        entry["count"] = len(entry["users"])
        if not entry["users"]:
            reactions.remove(entry)
        if not reactions:
            message.pop("reactions", None)
        self._save(channel, message)
        self._reaction_event("reaction_removed", user, name, channel, message)
        return self._with_pins(channel, message)

    def reactions(self, channel: str, ts: str) -> Message:
        """The message with its reactions; channel_not_found, bad_timestamp, message_not_found."""
        return self._with_pins(channel, self._reactable(channel, ts))

// The workspace's chat page: a small Slack client (Web API + RTM with a human's token).
"use strict";

(() => {
  const POLL_MS = 1000;
  const DEVICES_MS = 2000;
  const DEVICES_ABSENT_MS = 10000;
  const PING_MS = 20000;
  const HELLO_TIMEOUT_MS = 10000;
  const MAX_BACKOFF_MS = 30000;
  const GROUP_SECONDS = 300;
  const QUICK_REACTIONS = ["thumbsup", "white_check_mark", "eyes", "heart", "tada", "joy", "fire", "pray"];

  const EMOJI = {
    "+1": "👍", thumbsup: "👍", "-1": "👎", thumbsdown: "👎", white_check_mark: "✅",
    heavy_check_mark: "✔️", ballot_box_with_check: "☑️", x: "❌", eyes: "👀", heart: "❤️",
    tada: "🎉", joy: "😂", smile: "😄", slightly_smiling_face: "🙂", grinning: "😀",
    wink: "😉", thinking_face: "🤔", fire: "🔥", pray: "🙏", clap: "👏", wave: "👋",
    ok_hand: "👌", raised_hands: "🙌", muscle: "💪", rocket: "🚀", star: "⭐", sparkles: "✨",
    zap: "⚡", bulb: "💡", warning: "⚠️", no_entry: "⛔", hourglass: "⌛",
    hourglass_flowing_sand: "⏳", robot_face: "🤖", house: "🏠", house_with_garden: "🏡",
    door: "🚪", lock: "🔒", unlock: "🔓", key: "🔑", thermometer: "🌡️", sunny: "☀️",
    cloud: "☁️", snowflake: "❄️", droplet: "💧", bell: "🔔", musical_note: "🎵",
    speaker: "🔈", sound: "🔉", loud_sound: "🔊", mute: "🔇", tv: "📺", camera: "📷",
    coffee: "☕", pushpin: "📌", pin: "📌", memo: "📝", calendar: "📆", clock1: "🕐",
    alarm_clock: "⏰", battery: "🔋", electric_plug: "🔌", gear: "⚙️", wrench: "🔧",
    hammer: "🔨", question: "❓", exclamation: "❗", heavy_plus_sign: "➕",
    heavy_minus_sign: "➖", arrows_counterclockwise: "🔄", repeat: "🔁", stop_button: "⏹️",
    arrow_forward: "▶️", red_circle: "🔴", large_green_circle: "🟢", large_blue_circle: "🔵",
    white_circle: "⚪", black_circle: "⚫", sob: "😭", cry: "😢", scream: "😱",
    sunglasses: "😎", sleeping: "😴", see_no_evil: "🙈", 100: "💯", boom: "💥",
    point_up: "☝️", point_right: "👉", ok: "🆗", new: "🆕", sos: "🆘", dog: "🐶", cat: "🐱",
  };

  // UI icons as SVG paths (24x24), so the page needs no emoji font for its own chrome.
  const ICONS = {
    pin: "M16 3l5 5-2 1-3.5 3.5.5 4.5-2 2-4-4-5 5H4v-1l5-5-4-4 2-2 4.5.5L15 5z",
    thread: "M4 4h16a1 1 0 0 1 1 1v11a1 1 0 0 1-1 1H9l-5 4V5a1 1 0 0 1 1-1z",
    smile: "M12 2a10 10 0 1 1 0 20 10 10 0 0 1 0-20zm0 2a8 8 0 1 0 0 16 8 8 0 0 0 0-16zM9 8.5a1.5 1.5 0 1 1 0 3 1.5 1.5 0 0 1 0-3zm6 0a1.5 1.5 0 1 1 0 3 1.5 1.5 0 0 1 0-3zM7.8 14h8.4a4.4 4.4 0 0 1-8.4 0z",
    lock: "M7 10V7a5 5 0 0 1 10 0v3h1a1 1 0 0 1 1 1v9a1 1 0 0 1-1 1H6a1 1 0 0 1-1-1v-9a1 1 0 0 1 1-1zm2 0h6V7a3 3 0 0 0-6 0z",
  };

  function icon(name, className = "icon") {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("class", className);
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", ICONS[name]);
    svg.append(path);
    return svg;
  }

  // ---- small helpers -------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function decodeEntities(text) {
    return text.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
  }

  function encodeEntities(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function tsDate(ts) {
    return new Date(parseFloat(ts) * 1000);
  }

  function timeOf(ts) {
    return tsDate(ts).toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
  }

  function dayKey(ts) {
    const d = tsDate(ts);
    return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
  }

  function dayLabel(ts) {
    const d = tsDate(ts);
    const today = new Date();
    const yesterday = new Date(Date.now() - 86400000);
    if (d.toDateString() === today.toDateString()) return "Today";
    if (d.toDateString() === yesterday.toDateString()) return "Yesterday";
    return d.toLocaleDateString([], { weekday: "long", month: "long", day: "numeric" });
  }

  function colorClass(key) {
    let hash = 0;
    for (const ch of String(key)) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
    return `c${hash % 8}`;
  }

  function emojiFor(name) {
    const base = String(name).split("::")[0];
    return EMOJI[base] || null;
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  class SlackError extends Error {
    constructor(method, code) {
      super(`${method}: ${code}`);
      this.code = code;
    }
  }

  // ---- state ---------------------------------------------------------------------------

  const state = {
    gen: 0, // bumped on every user switch; late answers of an older session are dropped
    humans: [],
    me: null, // {id, name, token}
    team: null,
    users: new Map(),
    usersVersion: 0,
    channels: [],
    channel: null,
    messages: [],
    pinned: new Set(),
    thread: null, // parent ts of the open thread
    threadMessages: [],
    unread: new Set(),
    sock: null,
    live: false,
    backoff: 0,
    refreshing: false,
    refreshAgain: false,
    stickToBottom: true,
  };

  // ---- Web API -------------------------------------------------------------------------

  async function api(method, args = {}, token = state.me && state.me.token) {
    const body = new URLSearchParams();
    for (const [key, value] of Object.entries(args)) {
      if (value !== undefined && value !== null) body.set(key, String(value));
    }
    const resp = await fetch(`/api/${method}`, {
      method: "POST",
      headers: {
        Authorization: `Bearer ${token}`,
        "Content-Type": "application/x-www-form-urlencoded",
      },
      body,
    });
    let data = null;
    try {
      data = await resp.json();
    } catch (_err) {
      throw new SlackError(method, `http_${resp.status}`);
    }
    if (!data || data.ok !== true) {
      throw new SlackError(method, (data && data.error) || `http_${resp.status}`);
    }
    return data;
  }

  async function paged(method, args, key) {
    const items = [];
    let cursor = "";
    for (let page = 0; page < 50; page++) {
      const data = await api(method, { ...args, cursor: cursor || undefined });
      items.push(...(data[key] || []));
      cursor = (data.response_metadata && data.response_metadata.next_cursor) || "";
      if (!cursor) break;
    }
    return items;
  }

  let errorTimer = null;
  function showError(err) {
    const box = $("error");
    box.textContent = err instanceof SlackError ? err.message : `error: ${err}`;
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => (box.textContent = ""), 6000);
  }

  // ---- names ---------------------------------------------------------------------------

  function userName(id) {
    const u = state.users.get(id);
    if (!u) return id;
    const p = u.profile || {};
    return p.display_name || u.real_name || p.real_name || u.name || id;
  }

  function channelName(id) {
    const ch = state.channels.find((c) => c.id === id);
    return ch ? ch.name : id;
  }

  function authorOf(m) {
    const u = m.user ? state.users.get(m.user) : null;
    const isBot = Boolean(m.bot_id) || Boolean(u && u.is_bot);
    let name;
    if (m.username) name = m.username;
    else if (u) name = userName(m.user);
    else if (m.bot_profile && m.bot_profile.name) name = m.bot_profile.name;
    else name = m.user || "bot";
    return { key: m.user || m.bot_id || name, name, isBot };
  }

  // ---- mrkdwn (to DOM nodes only: text is never parsed as HTML) --------------------------

  function renderMrkdwn(text, parent) {
    const parts = String(text || "").split(/(```[\s\S]*?```|`[^`\n]+`)/);
    for (const part of parts) {
      if (!part) continue;
      if (part.length >= 6 && part.startsWith("```") && part.endsWith("```")) {
        parent.append(el("pre", "code-block", decodeEntities(part.slice(3, -3).replace(/^\n/, ""))));
      } else if (part.length >= 2 && part.startsWith("`") && part.endsWith("`")) {
        parent.append(el("code", "code", decodeEntities(part.slice(1, -1))));
      } else {
        renderInline(part, parent);
      }
    }
  }

  function renderInline(text, parent) {
    for (const part of text.split(/(<[^<>\n]+>)/)) {
      if (!part) continue;
      if (part.startsWith("<") && part.endsWith(">")) renderAngle(part.slice(1, -1), parent);
      else renderEmphasis(decodeEntities(part), parent);
    }
  }

  function renderAngle(inner, parent) {
    const bar = inner.indexOf("|");
    const target = bar >= 0 ? inner.slice(0, bar) : inner;
    const label = bar >= 0 ? decodeEntities(inner.slice(bar + 1)) : "";
    if (/^@[UWB][A-Z0-9]+$/.test(target)) {
      const node = el("span", "mention", `@${label || userName(target.slice(1))}`);
      if (state.me && target.slice(1) === state.me.id) node.classList.add("me");
      parent.append(node);
    } else if (/^#[CGD][A-Z0-9]+$/.test(target)) {
      const id = target.slice(1);
      const node = el("a", "channel-link", `#${label || channelName(id)}`);
      node.href = "#";
      node.addEventListener("click", (event) => {
        event.preventDefault();
        if (state.channels.some((c) => c.id === id)) selectChannel(id);
      });
      parent.append(node);
    } else if (/^!(here|channel|everyone)$/.test(target)) {
      parent.append(el("span", "mention", `@${target.slice(1)}`));
    } else if (target.startsWith("!")) {
      parent.append(document.createTextNode(label || decodeEntities(target.slice(1))));
    } else if (/^(https?:\/\/|mailto:)/i.test(target)) {
      const link = el("a", "link", label || decodeEntities(target));
      link.href = decodeEntities(target);
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      parent.append(link);
    } else {
      renderEmphasis(decodeEntities(`<${inner}>`), parent);
    }
  }

  const EMPHASIS = { "*": "strong", _: "em", "~": "del" };

  function renderEmphasis(text, parent) {
    const re = /([*_~])([^\n]+?)\1/g;
    let last = 0;
    let m;
    while ((m = re.exec(text)) !== null) {
      const before = m.index > 0 ? text[m.index - 1] : "";
      const after = text[re.lastIndex] || "";
      const inner = m[2];
      const bounded = !/[\p{L}\p{N}]/u.test(before) && !/[\p{L}\p{N}]/u.test(after);
      if (!bounded || /^\s|\s$/.test(inner) || inner.includes(m[1])) {
        re.lastIndex = m.index + 1;
        continue;
      }
      renderEmoji(text.slice(last, m.index), parent);
      const node = el(EMPHASIS[m[1]]);
      renderEmoji(inner, node);
      parent.append(node);
      last = re.lastIndex;
    }
    renderEmoji(text.slice(last), parent);
  }

  function renderEmoji(text, parent) {
    if (!text) return;
    parent.append(
      document.createTextNode(
        text.replace(/:([a-z0-9_+-]+(?:::skin-tone-\d)?):/g, (all, name) => emojiFor(name) || all),
      ),
    );
  }

  // What the Slack client does before chat.postMessage: escape &, < and >, and turn
  // "@alice" / "#kitchen" into real mentions.
  function toSlackText(typed) {
    let text = encodeEntities(typed);
    text = text.replace(/(^|[\s(])@([\w.-]+)/g, (all, pre, name) => {
      const lower = name.toLowerCase();
      for (const u of state.users.values()) {
        const p = u.profile || {};
        if ([u.name, p.display_name].filter(Boolean).some((n) => n.toLowerCase() === lower)) {
          return `${pre}<@${u.id}>`;
        }
      }
      if (["here", "channel", "everyone"].includes(lower)) return `${pre}<!${lower}>`;
      return all;
    });
    return text.replace(/(^|[\s(])#([\w-]+)/g, (all, pre, name) => {
      const ch = state.channels.find((c) => c.name === name.toLowerCase());
      return ch ? `${pre}<#${ch.id}|${ch.name}>` : all;
    });
  }

  // ---- rendering: keyed lists, so live updates do not flicker or lose scroll ------------

  function reconcile(container, items) {
    const old = new Map();
    for (const child of container.children) old.set(child.dataset.key, child);
    const wanted = items.map((item) => {
      const prev = old.get(item.key);
      if (prev && prev.dataset.sig === item.sig) return prev;
      const node = item.build();
      node.dataset.key = item.key;
      node.dataset.sig = item.sig;
      return node;
    });
    const keep = new Set(wanted);
    for (const child of [...container.children]) if (!keep.has(child)) child.remove();
    wanted.forEach((node, index) => {
      if (container.children[index] !== node) container.insertBefore(node, container.children[index] || null);
    });
  }

  function isPinned(m) {
    return state.pinned.has(m.ts) || (Array.isArray(m.pinned_to) && m.pinned_to.includes(state.channel));
  }

  function messageItems(messages, { inThread }) {
    const items = [];
    let prev = null;
    for (const m of messages) {
      if (!inThread && (!prev || dayKey(prev.ts) !== dayKey(m.ts))) {
        const label = dayLabel(m.ts);
        items.push({ key: `day-${dayKey(m.ts)}`, sig: label, build: () => dayDivider(label) });
      }
      const author = authorOf(m);
      const pinned = isPinned(m);
      const continued = Boolean(
        prev && !pinned && !m.subtype && !prev.subtype &&
          authorOf(prev).key === author.key &&
          parseFloat(m.ts) - parseFloat(prev.ts) < GROUP_SECONDS &&
          dayKey(prev.ts) === dayKey(m.ts) &&
          !(inThread && prev === messages[0]),
      );
      const sig = JSON.stringify([m, pinned, continued, state.usersVersion, state.me && state.me.id]);
      items.push({
        key: `m-${m.ts}`,
        sig,
        build: () => buildMessage(m, { author, pinned, continued, inThread }),
      });
      if (inThread && prev === null && messages.length > 1) {
        const n = messages.length - 1;
        items.push({
          key: "thread-count",
          sig: String(n),
          build: () => el("div", "thread-divider", `${n} ${n === 1 ? "reply" : "replies"}`),
        });
      }
      prev = m;
    }
    return items;
  }

  function dayDivider(label) {
    const node = el("div", "day-divider");
    node.append(el("span", null, label));
    return node;
  }

  function buildMessage(m, { author, pinned, continued, inThread }) {
    const node = el("div", "msg");
    node.dataset.ts = m.ts;
    if (continued) node.classList.add("continued");
    if (pinned) node.classList.add("pinned");
    if (m.subtype && m.subtype !== "thread_broadcast" && m.subtype !== "bot_message") {
      node.classList.add("system");
    }

    if (pinned) {
      const label = el("div", "pin-label");
      label.append(icon("pin", "icon pin-icon"), document.createTextNode("Pinned"));
      node.append(label);
    }

    const gutter = el("div", "gutter");
    if (continued) {
      gutter.append(el("span", "hover-time", timeOf(m.ts)));
    } else {
      const avatar = el("div", `avatar ${colorClass(author.key)}`, author.name.slice(0, 1).toUpperCase());
      if (author.isBot) avatar.classList.add("bot");
      gutter.append(avatar);
    }
    node.append(gutter);

    const body = el("div", "body");
    if (!continued) {
      const meta = el("div", "meta");
      meta.append(el("span", "author", author.name));
      if (author.isBot) meta.append(el("span", "badge", "APP"));
      const time = el("time", "time", timeOf(m.ts));
      time.title = tsDate(m.ts).toLocaleString();
      meta.append(time);
      body.append(meta);
    }
    if (m.subtype === "thread_broadcast" && !inThread) {
      body.append(el("div", "broadcast", "replied to a thread"));
    }
    const text = el("div", "text");
    renderMrkdwn(m.text, text);
    if (m.edited) text.append(el("span", "edited", " (edited)"));
    body.append(text);

    if (Array.isArray(m.reactions) && m.reactions.length) body.append(buildReactions(m));

    const replyCount = m.reply_count || 0;
    if (!inThread && replyCount > 0) {
      const replies = el("button", "replies");
      replies.type = "button";
      const faces = el("span", "reply-faces");
      for (const uid of (m.reply_users || []).slice(0, 3)) {
        faces.append(el("span", `mini-avatar ${colorClass(uid)}`, userName(uid).slice(0, 1).toUpperCase()));
      }
      replies.append(faces, el("span", "reply-count", `${replyCount} ${replyCount === 1 ? "reply" : "replies"}`));
      if (m.latest_reply) replies.append(el("span", "reply-last", `Last reply ${timeOf(m.latest_reply)}`));
      replies.addEventListener("click", () => openThread(m.ts));
      body.append(replies);
    }
    node.append(body);
    node.append(buildActions(m, { pinned, inThread }));
    return node;
  }

  function buildReactions(m) {
    const row = el("div", "reactions");
    for (const r of m.reactions) {
      const users = r.users || [];
      const mine = Boolean(state.me && users.includes(state.me.id));
      const chip = el("button", mine ? "reaction mine" : "reaction");
      chip.type = "button";
      chip.dataset.name = r.name;
      chip.title = `${users.map(userName).join(", ")} reacted with :${r.name}:`;
      chip.append(el("span", "reaction-emoji", emojiFor(r.name) || `:${r.name}:`));
      chip.append(el("span", "reaction-count", String(r.count || users.length)));
      chip.addEventListener("click", () =>
        call(mine ? "reactions.remove" : "reactions.add", { channel: state.channel, timestamp: m.ts, name: r.name }),
      );
      row.append(chip);
    }
    return row;
  }

  function buildActions(m, { pinned, inThread }) {
    const bar = el("div", "actions");
    const add = (iconName, title, onClick) => {
      const b = el("button", "action");
      b.append(icon(iconName));
      b.type = "button";
      b.title = title;
      b.setAttribute("aria-label", title);
      b.addEventListener("click", onClick);
      bar.append(b);
    };
    add("smile", "Add reaction", (event) => openPicker(event.currentTarget, m.ts));
    if (!inThread) add("thread", "Reply in thread", () => openThread(m.ts));
    add("pin", pinned ? "Unpin" : "Pin to channel", () =>
      call(pinned ? "pins.remove" : "pins.add", { channel: state.channel, timestamp: m.ts }),
    );
    return bar;
  }

  let picker = null;
  function openPicker(anchor, ts) {
    closePicker();
    picker = el("div", "picker");
    for (const name of QUICK_REACTIONS) {
      const b = el("button", "picker-emoji", emojiFor(name));
      b.type = "button";
      b.title = `:${name}:`;
      b.addEventListener("click", () => {
        closePicker();
        call("reactions.add", { channel: state.channel, timestamp: ts, name });
      });
      picker.append(b);
    }
    document.body.append(picker);
    const rect = anchor.getBoundingClientRect();
    const left = Math.max(8, Math.min(rect.right - picker.offsetWidth, window.innerWidth - picker.offsetWidth - 8));
    picker.style.left = `${left}px`;
    picker.style.top = `${Math.max(8, rect.top - picker.offsetHeight - 6)}px`;
  }

  function closePicker() {
    if (picker) picker.remove();
    picker = null;
  }

  document.addEventListener("click", (event) => {
    if (picker && !picker.contains(event.target) && !event.target.closest(".action")) closePicker();
  });

  async function call(method, args) {
    try {
      await api(method, args);
    } catch (err) {
      showError(err);
    }
    scheduleRefresh();
  }

  function renderChannels() {
    const list = $("channel-list");
    reconcile(
      list,
      state.channels.map((c) => {
        const active = c.id === state.channel;
        const unread = state.unread.has(c.id);
        return {
          key: c.id,
          sig: JSON.stringify([c.name, c.is_private, active, unread]),
          build: () => {
            const li = el("li");
            const a = el("a", "channel-item");
            a.href = "#";
            a.dataset.channel = c.id;
            if (active) a.classList.add("active");
            if (unread) a.classList.add("unread");
            const mark = el("span", "hash", c.is_private ? null : "#");
            if (c.is_private) mark.append(icon("lock"));
            a.append(mark, el("span", "name", c.name));
            a.addEventListener("click", (event) => {
              event.preventDefault();
              selectChannel(c.id);
            });
            li.append(a);
            return li;
          },
        };
      }),
    );
  }

  function renderHeader() {
    const ch = state.channels.find((c) => c.id === state.channel);
    $("channel-name").textContent = ch ? ch.name : "";
    const topic = $("channel-topic");
    topic.textContent = "";
    if (ch && ch.topic && ch.topic.value) renderMrkdwn(ch.topic.value, topic);
    $("message-input").placeholder = ch ? `Message #${ch.name}` : "Message";
    document.title = ch ? `#${ch.name} · ${(state.team && state.team.name) || "troupe"}` : "troupe";
  }

  function renderMessages({ forceBottom = false } = {}) {
    const box = $("messages");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    const items = messageItems(state.messages, { inThread: false });
    if (!items.length && state.channel) {
      const ch = state.channels.find((c) => c.id === state.channel);
      items.push({
        key: "intro",
        sig: String(ch && ch.name),
        build: () => {
          const intro = el("div", "intro");
          intro.append(el("h3", null, `This is the very beginning of #${ch ? ch.name : ""}`));
          intro.append(el("p", null, "Say hello: the house is listening."));
          return intro;
        },
      });
    }
    reconcile(box, items);
    if (forceBottom || atBottom || state.stickToBottom) box.scrollTop = box.scrollHeight;
    state.stickToBottom = false;
  }

  function renderThread({ forceBottom = false } = {}) {
    const pane = $("thread");
    pane.hidden = !state.thread;
    updateSidePanel();
    if (!state.thread) return;
    $("thread-channel").textContent = `#${channelName(state.channel)}`;
    const box = $("thread-messages");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    reconcile(box, messageItems(state.threadMessages, { inThread: true }));
    if (forceBottom || atBottom) box.scrollTop = box.scrollHeight;
  }

  function updateSidePanel() {
    $("side-panel").hidden = $("thread").hidden && $("devices").hidden && $("scheduled").hidden;
  }

  function setConnection(kind) {
    const labels = { live: "live", polling: "polling", connecting: "connecting…" };
    $("conn").dataset.state = kind;
    $("conn-label").textContent = labels[kind] || kind;
  }

  // ---- loading -------------------------------------------------------------------------

  function visibleInChannel(m) {
    return !(m.thread_ts && m.thread_ts !== m.ts && m.subtype !== "thread_broadcast");
  }

  async function refresh() {
    const gen = state.gen;
    const channel = state.channel;
    if (!state.me || !channel) return;
    const [history, pins] = await Promise.all([
      api("conversations.history", { channel, limit: 100 }),
      api("pins.list", { channel }).catch(() => null),
    ]);
    let replies = null;
    const thread = state.thread;
    if (thread) {
      replies = await api("conversations.replies", { channel, ts: thread, limit: 1000 }).catch((err) => {
        if (err.code === "thread_not_found" || err.code === "message_not_found") return { messages: [] };
        throw err;
      });
    }
    if (gen !== state.gen || channel !== state.channel) return;
    state.messages = (history.messages || []).filter(visibleInChannel).reverse();
    if (pins) {
      state.pinned = new Set(
        (pins.items || []).filter((i) => i.message).map((i) => i.message.ts),
      );
    }
    renderMessages();
    if (thread && thread === state.thread && replies) {
      state.threadMessages = replies.messages || [];
      if (!state.threadMessages.length) closeThread();
      else renderThread();
    }
  }

  // Coalesce bursts of events into one reload; never two reloads at once.
  function scheduleRefresh() {
    if (state.refreshing) {
      state.refreshAgain = true;
      return;
    }
    state.refreshing = true;
    setTimeout(async () => {
      try {
        await refresh();
      } catch (err) {
        showError(err);
      } finally {
        state.refreshing = false;
        if (state.refreshAgain) {
          state.refreshAgain = false;
          scheduleRefresh();
        }
      }
    }, 30);
  }

  async function loadUsers() {
    const members = await paged("users.list", { limit: 200 }, "members");
    state.users = new Map(members.map((u) => [u.id, u]));
    state.usersVersion++;
  }

  async function loadChannels() {
    const channels = await paged(
      "conversations.list",
      { types: "public_channel,private_channel", exclude_archived: true, limit: 200 },
      "channels",
    );
    state.channels = channels.filter((c) => c.is_channel || c.is_group || c.is_private);
    renderChannels();
  }

  async function selectChannel(id) {
    if (state.channel !== id) {
      state.channel = id;
      state.messages = [];
      state.pinned = new Set();
      closeThread();
      $("messages").replaceChildren();
    }
    state.unread.delete(id);
    state.stickToBottom = true;
    localStorage.setItem("troupe.channel", id);
    renderChannels();
    renderHeader();
    scheduleRefresh();
    $("message-input").focus();
  }

  async function openThread(ts) {
    state.thread = ts;
    state.threadMessages = state.messages.filter((m) => m.ts === ts);
    renderThread({ forceBottom: true });
    $("thread-input").focus();
    scheduleRefresh();
  }

  function closeThread() {
    state.thread = null;
    state.threadMessages = [];
    $("thread-messages").replaceChildren();
    renderThread();
  }

  // ---- RTM -----------------------------------------------------------------------------

  async function connectRtm(gen) {
    if (gen !== state.gen) return;
    let url;
    try {
      url = (await api("rtm.connect", {})).url;
    } catch (_err) {
      reconnectLater(gen);
      return;
    }
    if (gen !== state.gen) return;
    let sock;
    try {
      sock = new WebSocket(url);
    } catch (_err) {
      reconnectLater(gen);
      return;
    }
    state.sock = sock;
    let pingId = 0;
    let awaitingPong = false;
    let pinger = null;
    const helloTimer = setTimeout(() => sock.close(), HELLO_TIMEOUT_MS);

    sock.addEventListener("message", (frame) => {
      if (state.sock !== sock) return;
      let event;
      try {
        event = JSON.parse(frame.data);
      } catch (_err) {
        return;
      }
      if (event.type === "hello") {
        clearTimeout(helloTimer);
        state.live = true;
        state.backoff = 0;
        setConnection("live");
        scheduleRefresh();
        pinger = setInterval(() => {
          if (awaitingPong) {
            sock.close();
            return;
          }
          awaitingPong = true;
          sock.send(JSON.stringify({ id: ++pingId, type: "ping" }));
        }, PING_MS);
      } else if (event.type === "pong") {
        awaitingPong = false;
      } else if (event.type === "goodbye") {
        sock.close();
      } else {
        onEvent(event);
      }
    });
    sock.addEventListener("close", () => {
      clearTimeout(helloTimer);
      clearInterval(pinger);
      if (state.sock !== sock) return;
      state.sock = null;
      state.live = false;
      reconnectLater(gen);
    });
  }

  function reconnectLater(gen) {
    if (gen !== state.gen) return;
    setConnection("polling");
    const base = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** state.backoff);
    state.backoff = Math.min(state.backoff + 1, 10);
    setTimeout(() => connectRtm(gen), base / 2 + Math.random() * (base / 2));
  }

  function eventChannel(event) {
    if (event.channel && typeof event.channel === "string") return event.channel;
    if (event.channel_id) return event.channel_id;
    if (event.item && event.item.channel) return event.item.channel;
    return null;
  }

  function onEvent(event) {
    const channel = eventChannel(event);
    if (["channel_created", "channel_joined", "channel_left", "channel_rename", "channel_archive",
      "channel_unarchive", "member_joined_channel", "group_joined"].includes(event.type)) {
      loadChannels().catch(showError);
    }
    if (["user_change", "team_join", "bot_added", "bot_changed"].includes(event.type)) {
      loadUsers().then(() => renderMessages()).catch(showError);
    }
    if (!channel) return;
    if (channel === state.channel) {
      scheduleRefresh();
      return;
    }
    const isNewPost =
      event.type === "message" &&
      (!event.subtype || event.subtype === "thread_broadcast" || event.subtype === "bot_message") &&
      visibleInChannel(event) &&
      !(state.me && event.user === state.me.id);
    if (isNewPost && state.channels.some((c) => c.id === channel)) {
      state.unread.add(channel);
      renderChannels();
    }
  }

  // ---- posting -------------------------------------------------------------------------

  function wireComposer(input, form, threadOf) {
    const grow = () => {
      input.style.height = "auto";
      input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
    };
    input.addEventListener("input", grow);
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const typed = input.value.trim();
      if (!typed || !state.me || !state.channel) return;
      const channel = state.channel;
      const threadTs = threadOf();
      input.value = "";
      grow();
      const args = { channel, text: toSlackText(typed), thread_ts: threadTs || undefined };
      try {
        let data;
        try {
          data = await api("chat.postMessage", args);
        } catch (err) {
          if (err.code !== "not_in_channel") throw err;
          await api("conversations.join", { channel });
          data = await api("chat.postMessage", args);
        }
        if (channel === state.channel && data.message) {
          if (threadTs) {
            if (state.thread === threadTs && !state.threadMessages.some((m) => m.ts === data.ts)) {
              state.threadMessages.push(data.message);
              renderThread({ forceBottom: true });
            }
          } else if (!state.messages.some((m) => m.ts === data.ts)) {
            state.messages.push(data.message);
            renderMessages({ forceBottom: true });
          }
        }
        scheduleRefresh();
      } catch (err) {
        if (!input.value) input.value = typed;
        grow();
        showError(err);
      }
    });
  }

  // ---- sessions (who am I) -------------------------------------------------------------

  async function startSession(me) {
    const gen = ++state.gen;
    if (state.sock) {
      const old = state.sock;
      state.sock = null;
      old.close();
    }
    Object.assign(state, {
      me, live: false, backoff: 0, channel: null, messages: [], thread: null,
      threadMessages: [], pinned: new Set(), unread: new Set(),
    });
    $("messages").replaceChildren();
    closeThread();
    setConnection("connecting");
    try {
      const auth = await api("auth.test", {});
      state.team = { name: auth.team, id: auth.team_id };
      $("team-name").textContent = auth.team || "Workspace";
      await Promise.all([loadUsers(), loadChannels()]);
    } catch (err) {
      showError(err);
      if (gen === state.gen) setTimeout(() => gen === state.gen && startSession(me), 2000);
      return;
    }
    if (gen !== state.gen) return;
    const saved = localStorage.getItem("troupe.channel");
    const first = state.channels.find((c) => c.id === saved) || state.channels.find((c) => c.is_member) || state.channels[0];
    if (first) selectChannel(first.id);
    connectRtm(gen);
  }

  function fillPicker(people, selectedId) {
    const select = $("user-picker");
    select.replaceChildren();
    for (const h of people) {
      const option = el("option", null, `${h.real_name || h.name} (@${h.name})`);
      option.value = h.id;
      option.selected = h.id === selectedId;
      select.append(option);
    }
  }

  async function loadHumans() {
    try {
      const resp = await fetch("/page/humans", { cache: "no-store" });
      if (!resp.ok) return null;
      const humans = await resp.json();
      return Array.isArray(humans) ? humans : null;
    } catch (_err) {
      return null;
    }
  }

  function askForToken() {
    $("login").hidden = false;
    $("login-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const token = $("login-token").value.trim();
      try {
        const auth = await api("auth.test", {}, token);
        $("login").hidden = true;
        sessionStorage.setItem("troupe.token", token);
        const me = { id: auth.user_id, name: auth.user, real_name: auth.user, token };
        fillPicker([me], me.id);
        startSession(me);
      } catch (err) {
        $("login-error").textContent = err.message;
      }
    });
  }

  // ---- devices panel -------------------------------------------------------------------

  function scalarText(value) {
    if (value === true) return "on";
    if (value === false) return "off";
    if (value === null || value === undefined) return "—";
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  // A device state is shown as given: a word ("on", "closed"), a boolean, or a dict whose
  // "on"/"state" key makes the pill and whose other keys make the detail line.
  function describeState(value) {
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      return { pill: scalarText(value), detail: "" };
    }
    const rest = { ...value };
    let pill = "";
    for (const key of ["state", "on", "power"]) {
      if (key in rest) {
        pill = scalarText(rest[key]);
        delete rest[key];
        break;
      }
    }
    const detail = Object.entries(rest).map(([k, v]) => `${k} ${scalarText(v)}`).join(" · ");
    return { pill: pill || "—", detail };
  }

  function renderDevices(devices) {
    const list = $("device-list");
    reconcile(
      list,
      devices.map((d, index) => ({
        key: String(d.id || d.name || index),
        sig: JSON.stringify(d),
        build: () => {
          const li = el("li", "device");
          const { pill, detail } = describeState(d.state);
          const head = el("div", "device-head");
          head.append(el("span", "device-name", d.name || d.id || "device"));
          const badge = el("span", "device-state", pill);
          const lower = pill.toLowerCase();
          if (["on", "open", "unlocked", "playing", "home"].includes(lower)) badge.classList.add("on");
          if (["off", "closed", "locked", "idle", "away"].includes(lower)) badge.classList.add("off");
          head.append(badge);
          li.append(head);
          const where = [d.room, detail].filter(Boolean).join(" · ");
          if (where) li.append(el("div", "device-room", where));
          return li;
        },
      })),
    );
  }

  async function devicesLoop() {
    for (;;) {
      let wait = DEVICES_MS;
      try {
        const resp = await fetch("/page/devices", { cache: "no-store" });
        if (resp.status === 404) {
          $("devices").hidden = true;
          wait = DEVICES_ABSENT_MS;
        } else if (resp.ok) {
          const data = await resp.json();
          const devices = Array.isArray(data) ? data : data.devices;
          if (Array.isArray(devices)) {
            renderDevices(devices);
            $("devices").hidden = false;
          }
        }
      } catch (_err) {
        wait = DEVICES_ABSENT_MS;
      }
      updateSidePanel();
      await sleep(wait);
    }
  }

  // ---- scheduled panel: the fleet's pinned schedule records -------------------------------

  function renderScheduled(items) {
    reconcile(
      $("scheduled-list"),
      items.map((s) => ({
        key: `${s.channel}/${s.id}`,
        sig: JSON.stringify(s),
        build: () => {
          const li = el("li", "device");
          const head = el("div", "device-head");
          head.append(el("span", "device-name", `${s.id}. ${s.command}`));
          li.append(head);
          li.append(el("div", "device-room", `${s.when} · #${s.channel}`));
          return li;
        },
      })),
    );
    $("scheduled").hidden = items.length === 0;
  }

  async function scheduledLoop() {
    for (;;) {
      try {
        const resp = await fetch("/page/scheduled", { cache: "no-store" });
        if (resp.ok) {
          const data = await resp.json();
          if (Array.isArray(data.scheduled)) renderScheduled(data.scheduled);
        }
      } catch (_err) {
        // the workspace is restarting: try again next round
      }
      updateSidePanel();
      await sleep(DEVICES_MS);
    }
  }

  // ---- start ---------------------------------------------------------------------------

  async function main() {
    wireComposer($("message-input"), $("composer"), () => null);
    wireComposer($("thread-input"), $("thread-composer"), () => state.thread);
    $("thread-close").addEventListener("click", closeThread);
    document.addEventListener("keydown", (event) => {
      if (event.key !== "Escape") return;
      if (picker) closePicker();
      else if (state.thread) closeThread();
    });
    $("messages").addEventListener("scroll", closePicker);
    $("user-picker").addEventListener("change", (event) => {
      const human = state.humans.find((h) => h.id === event.target.value);
      if (!human) return;
      localStorage.setItem("troupe.user", human.id);
      startSession(human);
    });
    setInterval(() => {
      if (!state.live && state.me && state.channel) scheduleRefresh();
    }, POLL_MS);
    devicesLoop();
    scheduledLoop();

    const humans = await loadHumans();
    if (!humans || !humans.length) {
      const token = sessionStorage.getItem("troupe.token");
      if (!token) {
        askForToken();
        return;
      }
      try {
        const auth = await api("auth.test", {}, token);
        const me = { id: auth.user_id, name: auth.user, real_name: auth.user, token };
        fillPicker([me], me.id);
        startSession(me);
      } catch (_err) {
        sessionStorage.removeItem("troupe.token");
        askForToken();
      }
      return;
    }
    state.humans = humans;
    const saved = localStorage.getItem("troupe.user");
    const me = humans.find((h) => h.id === saved) || humans[0];
    fillPicker(humans, me.id);
    startSession(me);
  }

  main();
})();

// The WebSocket: subscriptions that survive reconnects, and the order lane.
//
// Every data message carries its channel and a gapless seq. After a drop the socket reconnects
// with backoff and subscribes with `since` (the last seq seen per channel) and the server's
// `epoch`; what was missed is replayed, or the server sends `resync` for a channel and the page
// reloads that state over HTTP. Orders are sent as {"op": "order"} and answered by
// `order_result` with the same id.

const MAX_BACKOFF_MS = 8000;

export class SocketDown extends Error {}

export class Socket {
  constructor(url, { getToken, onMessage, onResync, onStatus, onTokenExpired }) {
    this.url = url;
    this.getToken = getToken;
    this.onMessage = onMessage;
    this.onResync = onResync;
    this.onStatus = onStatus;
    this.onTokenExpired = onTokenExpired;
    this.channels = new Set();
    this.lastSeq = new Map();
    this.epoch = null;
    this.pending = new Map();
    this.nextId = 1;
    this.attempt = 0;
    this.ws = null;
    this.online = null; // unknown until the first attempt opens or fails
  }

  connect() {
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("open", () => this.opened(ws));
    ws.addEventListener("message", (event) => this.received(event.data));
    ws.addEventListener("close", () => this.closed(ws));
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  send(message) {
    if (this.isOpen) this.ws.send(JSON.stringify(message));
  }

  opened(ws) {
    if (ws !== this.ws) return;
    this.attempt = 0;
    this.setOnline(true);
    const batch = [];
    const token = this.getToken();
    if (token) batch.push({ op: "auth", token });
    const channels = [...this.channels].filter((channel) => channel !== "account" || token);
    if (channels.length) batch.push(this.subscription(channels));
    if (batch.length) this.send(batch);
  }

  subscription(channels) {
    const since = {};
    for (const channel of channels) {
      if (this.lastSeq.has(channel)) since[channel] = this.lastSeq.get(channel);
    }
    const message = { op: "subscribe", channels };
    if (Object.keys(since).length && this.epoch) Object.assign(message, { since, epoch: this.epoch });
    return message;
  }

  subscribe(channels) {
    const fresh = channels.filter((channel) => !this.channels.has(channel));
    fresh.forEach((channel) => this.channels.add(channel));
    if (fresh.length) this.send(this.subscription(fresh));
  }

  unsubscribe(channels) {
    const known = channels.filter((channel) => this.channels.delete(channel));
    known.forEach((channel) => this.lastSeq.delete(channel));
    if (known.length) this.send({ op: "unsubscribe", channels: known });
  }

  // A new access token: authenticate again and (re)join the account channel. Another account
  // (a switch) starts that channel afresh: its seqs are not the previous account's.
  authenticate(token, { newAccount = false } = {}) {
    if (!token) {
      this.unsubscribe(["account"]);
      return;
    }
    if (newAccount) this.lastSeq.delete("account");
    this.send({ op: "auth", token });
    this.channels.add("account");
    this.send(this.subscription(["account"]));
  }

  received(text) {
    const frame = JSON.parse(text);
    for (const message of Array.isArray(frame) ? frame : [frame]) this.handle(message);
  }

  handle(message) {
    if (message.channel !== undefined) {
      if (message.seq !== undefined) this.lastSeq.set(message.channel, message.seq); // summaries have none
      if (message.op === "resync") this.onResync(message.channel);
      else this.onMessage(message);
      return;
    }
    if (message.op === "subscribed") {
      this.epoch = message.epoch;
      for (const [channel, seq] of Object.entries(message.seq)) {
        if (!this.lastSeq.has(channel)) this.lastSeq.set(channel, seq);
      }
    } else if (message.op === "order_result") {
      const waiter = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (waiter) waiter.resolve(message);
    } else if (message.op === "error" && message.code === "TOKEN_EXPIRED") {
      this.onTokenExpired();
    }
  }

  // Send an order-lane request; resolves with its order_result. SocketDown when the socket
  // is not open or drops before the answer (the caller may retry over HTTP).
  order(request) {
    if (!this.isOpen) return Promise.reject(new SocketDown("the socket is not connected"));
    const id = `o${this.nextId++}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.send({ op: "order", id, ...request });
    });
  }

  closed(ws) {
    if (ws !== this.ws) return;
    this.setOnline(false);
    for (const waiter of this.pending.values()) waiter.reject(new SocketDown("the socket closed"));
    this.pending.clear();
    const delay = Math.min(MAX_BACKOFF_MS, 250 * 2 ** this.attempt) * (0.75 + Math.random() / 2);
    this.attempt += 1;
    setTimeout(() => this.connect(), delay);
  }

  setOnline(online) {
    if (online !== this.online) {
      this.online = online;
      this.onStatus(online);
    }
  }
}

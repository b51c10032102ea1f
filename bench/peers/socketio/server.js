// The Socket.IO 4 peer of natter-bench: the same chat semantics as natter's
// send path (membership check, fan-out to the other members, an ack to the
// sender), with nothing durable. See README.md.
//
// Env: PORT, JWT_SECRET, DATA (the `natter import` JSON file), HOST
// (default 127.0.0.1).

"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const http = require("node:http");
const jwt = require("jsonwebtoken");
const { Server } = require("socket.io");

function env(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is required`);
    process.exit(2);
  }
  return value;
}

const port = Number(env("PORT"));
const secret = env("JWT_SECRET");
const host = process.env.HOST || "127.0.0.1";
const data = JSON.parse(fs.readFileSync(env("DATA"), "utf8"));

// user id -> Set of the conversation ids they belong to.
const memberships = new Map();
for (const user of data.users || []) {
  memberships.set(user.id, new Set());
}
for (const conversation of data.conversations || []) {
  for (const participant of conversation.participants || []) {
    let set = memberships.get(participant);
    if (!set) {
      set = new Set();
      memberships.set(participant, set);
    }
    set.add(conversation.id);
  }
}

const httpServer = http.createServer((_req, res) => {
  res.writeHead(404).end();
});

const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  maxHttpBufferSize: 64 * 1024,
  serveClient: false,
});

// Auth: an HS256 JWT (alg pinned) whose `sub` names a known user, from the
// handshake's `auth.token` or the `?token=` query. Anything else is a
// connect_error.
io.use((socket, next) => {
  const { auth, query } = socket.handshake;
  const token = (auth && auth.token) || (query && query.token);
  if (typeof token !== "string" || token === "") {
    return next(new Error("Authentication required"));
  }
  let claims;
  try {
    claims = jwt.verify(token, secret, { algorithms: ["HS256"] });
  } catch {
    return next(new Error("Authentication failed"));
  }
  if (
    typeof claims !== "object" ||
    typeof claims.sub !== "string" ||
    typeof claims.exp !== "number" ||
    !memberships.has(claims.sub)
  ) {
    return next(new Error("Authentication failed"));
  }
  socket.data.user = claims.sub;
  socket.data.conversations = memberships.get(claims.sub);
  next();
});

io.on("connection", (socket) => {
  const user = socket.data.user;
  const conversations = socket.data.conversations;
  if (conversations.size > 0) {
    socket.join([...conversations]);
  }

  socket.on("send_message", (payload, ack) => {
    const reply = typeof ack === "function" ? ack : () => {};
    if (payload === null || typeof payload !== "object") {
      return reply({ error: "INVALID_MESSAGE" });
    }
    const { conversationId, content, clientMessageId } = payload;
    if (typeof conversationId !== "string" || !conversations.has(conversationId)) {
      return reply({ error: "UNAUTHORIZED" });
    }
    if (typeof content !== "string" || content === "") {
      return reply({ error: "INVALID_MESSAGE" });
    }
    const message = {
      _id: crypto.randomUUID(),
      conversationId,
      sender: user,
      content,
      clientMessageId,
      sentAt: new Date().toISOString(),
    };
    // Everyone in the room but this socket.
    socket.to(conversationId).emit("new_message", message);
    reply({ messageId: message._id, conversationId, clientMessageId });
  });
});

// Nothing to flush: exit at once, the sockets go with the process.
function shutdown() {
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

httpServer.listen(port, host);

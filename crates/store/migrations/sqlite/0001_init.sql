-- natter's initial SQLite schema.
--
-- Times are epoch milliseconds. Tables are STRICT so a wrongly typed value is
-- an error instead of being silently stored. Tables keyed by a text id are
-- WITHOUT ROWID: a lookup by id is then one b-tree search, not two.

CREATE TABLE users (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER
) STRICT, WITHOUT ROWID;

CREATE TABLE conversations (
    id          TEXT    NOT NULL PRIMARY KEY,
    title       TEXT,
    created_at  INTEGER NOT NULL,
    -- The seq of the newest message; the next message gets last_seq + 1.
    last_seq    INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;

CREATE TABLE members (
    conversation_id TEXT    NOT NULL REFERENCES conversations (id),
    user_id         TEXT    NOT NULL REFERENCES users (id),
    joined_at       INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
) STRICT, WITHOUT ROWID;

-- "Which conversations is this user in?" (every sync and connect).
CREATE INDEX members_by_user ON members (user_id, conversation_id);

CREATE TABLE messages (
    -- Alias of the rowid: the global commit order. Messages are never
    -- deleted, and the single writer inserts in commit order, so a larger
    -- pos was committed later.
    pos               INTEGER NOT NULL PRIMARY KEY,
    id                TEXT    NOT NULL UNIQUE,
    conversation_id   TEXT    NOT NULL REFERENCES conversations (id),
    seq               INTEGER NOT NULL,
    sender            TEXT    NOT NULL REFERENCES users (id),
    content           TEXT    NOT NULL,
    content_type      TEXT    NOT NULL,
    client_message_id TEXT,
    sent_at           INTEGER NOT NULL,
    -- Also the index every sync range scan uses.
    UNIQUE (conversation_id, seq),
    -- Idempotent sends; NULLs are distinct, so sends without an id never clash.
    UNIQUE (conversation_id, sender, client_message_id)
) STRICT;

-- The idempotency key's index, with client_message_id first and only for
-- messages that have one.
--
-- UNIQUE (conversation_id, sender, client_message_id) kept each sender's
-- entries together, at one place per (conversation, sender) in the index,
-- so a batch of sends from N senders dirtied N leaf pages, and every one is
-- written to the WAL, synced and checkpointed. Clients make their ids
-- time-ordered (a timestamp prefix, a UUIDv7, a ULID), so with the id
-- first new entries land at one place in the index: one page per batch.
-- The key is the same set of columns, so what counts as a duplicate does
-- not change; random ids cost what they did before; sends without an id
-- (NULL never clashes) get no entry at all.
--
-- SQLite cannot change a table's constraint in place, so the table is
-- rebuilt without it; nothing references messages, and pos keeps its values.

CREATE TABLE messages_new (
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
    UNIQUE (conversation_id, seq)
) STRICT;

INSERT INTO messages_new (pos, id, conversation_id, seq, sender, content, content_type,
                          client_message_id, sent_at)
    SELECT pos, id, conversation_id, seq, sender, content, content_type,
           client_message_id, sent_at
    FROM messages;

DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;

-- Idempotent sends: see above.
CREATE UNIQUE INDEX messages_by_client_id
    ON messages (client_message_id, conversation_id, sender)
    WHERE client_message_id IS NOT NULL;

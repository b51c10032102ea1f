-- Read receipts and delivery receipts: two watermarks per membership.
--
-- delivered_seq: every message up to it has reached one of the member's
-- devices. read_seq: every message up to it has been read by the member.
-- Both only ever rise, and go with the membership row when it is deleted.
-- Existing members start with everything so far delivered (their history is
-- not announced to its senders as newly delivered) and nothing read.
--
-- No new index is needed. Watermarks are read and written by the primary key
-- (conversation_id, user_id). A user's conversation list walks
-- members_by_user, finds each last message by UNIQUE (conversation_id, seq)
-- at last_seq, counts unread messages by a range scan of that same index
-- (seq > read_seq), and sorts only the user's own conversations by last
-- activity: an index cannot serve that order, since it depends on the user.

ALTER TABLE members ADD COLUMN delivered_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN read_seq      INTEGER NOT NULL DEFAULT 0;
UPDATE members SET delivered_seq =
    (SELECT last_seq FROM conversations WHERE conversations.id = members.conversation_id);

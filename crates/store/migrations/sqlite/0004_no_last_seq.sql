-- A conversation's newest seq is read from the messages, not kept beside them.
--
-- conversations.last_seq repeated max(seq) of UNIQUE (conversation_id, seq),
-- and every commit had to update it once per conversation it touched: with
-- sends spread over 500 conversations (natter-bench's dm), one more b-tree
-- write per send. Without it the writer took 12.8 µs per send instead of
-- 13.4 (five alternating runs of crates/store/examples/append_cost.rs at
-- 25,000 sends/s). The index answers max(seq) with one seek, and a read that
-- needs it runs in the same snapshot as the messages it reads, so there is
-- nothing left to disagree.

ALTER TABLE conversations DROP COLUMN last_seq;

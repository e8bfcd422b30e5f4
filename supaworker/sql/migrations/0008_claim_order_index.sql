-- supaworker: an index in the claim's own order, for workers that serve every queue.
--
-- claim_next_job orders pending jobs by (priority desc, run_at, created_at). The first claim
-- index leads with `queue`, which serves workers bound to queues; a worker serving all queues
-- had to read and sort the whole pending backlog on every claim (64 ms at 10^5 pending in
-- bench/growth.py, 0.7 ms with this index). Plain CREATE INDEX: `supabase db push` runs each
-- migration in a transaction, which rules out CONCURRENTLY; on a large live table create it
-- concurrently by hand first (same name), and this statement becomes a no-op.
create index if not exists processing_queue_claim_order_idx on public.processing_queue
  (priority desc, run_at, created_at) where status = 'pending';

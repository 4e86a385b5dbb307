-- quarantine: every row the run's ingest stages rejected, one table for the whole run.
-- Reads customers_quarantine, orders_quarantine, events_quarantine, survey_responses_quarantine
-- (written by the ingest.csv stages; one row per rejected record).
--   run_id, table_name, source_file, line_number (1-based, header = 1), column_name,
--   reason (stable code, see docs/input-contract.md, "Quarantine"), message, raw_record
select q.run_id, q.table_name, q.source_file, q.line_number, q.column_name, q.reason, q.message, q.raw_record
from customers_quarantine as q
union all
select q.run_id, q.table_name, q.source_file, q.line_number, q.column_name, q.reason, q.message, q.raw_record
from orders_quarantine as q
union all
select q.run_id, q.table_name, q.source_file, q.line_number, q.column_name, q.reason, q.message, q.raw_record
from events_quarantine as q
union all
select q.run_id, q.table_name, q.source_file, q.line_number, q.column_name, q.reason, q.message, q.raw_record
from survey_responses_quarantine as q

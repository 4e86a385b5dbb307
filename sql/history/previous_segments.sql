-- previous_segments: the latest snapshot in segment_history before this run's as_of (its rows as
-- published, one per customer); no rows on the first run or when no earlier snapshot exists.
-- Reads segment_history_before (the published history, as it was when the run started);
-- $as_of: the day, a date or 'YYYY-MM-DD' (the default pipeline reads it from run_as_of).
with previous as (
    select max(h.as_of) as as_of
    from segment_history_before as h
    where h.as_of < cast($as_of as date)
)

select h.*
from segment_history_before as h
inner join previous as p
    on h.as_of = p.as_of

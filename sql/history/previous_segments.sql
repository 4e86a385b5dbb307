-- previous_segments: the latest snapshot in segment_history before this run's as_of (its rows as
-- published, one per customer); no rows on the first run or when no earlier snapshot exists.
-- Reads segment_history_before (the published history, as it was when the run started) and
-- run_as_of.
with run as (
    select r.as_of
    from run_as_of as r
),

previous as (
    select max(h.as_of) as as_of
    from segment_history_before as h
    cross join run
    where h.as_of < run.as_of
)

select h.*
from segment_history_before as h
inner join previous as p
    on h.as_of = p.as_of

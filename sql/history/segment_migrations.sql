-- segment_migrations: per segmentation, how many customers of this snapshot came from each
-- segment of the previous one: (segmentation, from_as_of, to_as_of, from_segment, to_segment,
-- customers). Customers the previous snapshot lacks (all of them when there is none; from_as_of
-- is then null) come from `new`. Rows of one segmentation add up to the customers in this
-- snapshot. Reads segment_transitions.
select
    t.segmentation,
    t.from_as_of,
    t.to_as_of,
    coalesce(t.from_segment, 'new') as from_segment,
    t.to_segment,
    count(*) as customers
from segment_transitions as t
group by t.segmentation, t.from_as_of, t.to_as_of, coalesce(t.from_segment, 'new'), t.to_segment

-- segment_changes: the change feed. One row per customer and segmentation whose segment differs
-- from the previous snapshot: customer_id, segmentation, from_segment (`new` for a customer the
-- previous snapshot lacks), to_segment, from_as_of, to_as_of. Empty when there is no previous
-- snapshot. Reads segment_transitions.
select
    t.customer_id,
    t.segmentation,
    coalesce(t.from_segment, 'new') as from_segment,
    t.to_segment,
    t.from_as_of,
    t.to_as_of
from segment_transitions as t
where t.from_as_of is not null
    and t.from_segment is distinct from t.to_segment

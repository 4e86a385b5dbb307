-- customer_clv: the published CLV table (output contract v1), one row per customer with a
-- counted order: the purchase summary and predictions of the features.clv stage, and the
-- customer's `clv` segment. Reads `segmented` (customer_features with the predictions joined
-- and every rule segment; customers without a counted order have no predictions).
select
    s.customer_id,
    s.as_of,
    s.repeat_purchases,
    s.repeat_recency_days,
    s.observed_days,
    s.avg_repeat_amount,
    s.p_alive,
    s.expected_purchases,
    s.expected_order_value,
    s.predicted_clv,
    s.clv_score,
    s.clv_segment
from segmented as s
where s.p_alive is not null

-- campaign_activity: one row per campaign and customer with anything counted before as_of, the
-- grain campaign_performance aggregates (a work table, not published):
--   first_sent                 the day of the customer's first `email_sent` for the campaign
--                              (null: none)
--   sent, opened, clicked      1 when the customer has an email_sent / email_open / email_click
--                              event for the campaign, else 0 (each on its own: an open whose send
--                              is missing from the export still counts)
--   converted, revenue         1 when the customer has an order attributed to the campaign
--                              (orders.campaign_id), and the sum of those orders' amounts
-- A campaign with attributed orders and no email event (its sends fall before the export
-- starts, say) is here too, so its conversions and revenue are not lost. Reads events and
-- orders, each scanned once; $as_of: the day, a date or 'YYYY-MM-DD' (the default pipeline reads
-- it from run_as_of). Timestamps are UTC: a date before as_of is a timestamp before as_of's
-- midnight, a literal, so no row is cast to a date to be filtered.
with activity as (
    select
        e.campaign_id,
        e.customer_id,
        cast(min(case when e.event_type = 'email_sent' then e.event_ts end) as date) as first_sent,
        max(case when e.event_type = 'email_sent' then 1 else 0 end) as sent,
        max(case when e.event_type = 'email_open' then 1 else 0 end) as opened,
        max(case when e.event_type = 'email_click' then 1 else 0 end) as clicked
    from events as e
    where e.campaign_id is not null
        and e.event_type in ('email_sent', 'email_open', 'email_click')
        and e.event_ts < arrow_cast(cast($as_of as date), 'Timestamp(Microsecond, Some("UTC"))')
    group by e.campaign_id, e.customer_id
),

converted as (
    select o.campaign_id, o.customer_id, sum(o.amount) as revenue
    from orders as o
    where o.campaign_id is not null
        and o.order_ts < arrow_cast(cast($as_of as date), 'Timestamp(Microsecond, Some("UTC"))')
    group by o.campaign_id, o.customer_id
)

select
    coalesce(a.campaign_id, v.campaign_id) as campaign_id,
    coalesce(a.customer_id, v.customer_id) as customer_id,
    a.first_sent,
    coalesce(a.sent, 0) as sent,
    coalesce(a.opened, 0) as opened,
    coalesce(a.clicked, 0) as clicked,
    case when v.customer_id is null then 0 else 1 end as converted,
    coalesce(v.revenue, 0) as revenue
from activity as a
full outer join converted as v
    on v.campaign_id = a.campaign_id and v.customer_id = a.customer_id

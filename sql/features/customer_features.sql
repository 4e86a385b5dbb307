-- customer_features: one row per customer_id in customers, every feature at the run's as_of.
-- Reads customers, customer_rfm, orders, events and survey_responses. $as_of: the day, a date or
-- 'YYYY-MM-DD' (the default pipeline reads it from run_as_of).
-- Every column is documented in docs/output-contract.md ("customer_features"). In short:
--   windows   a row counts when its date (UTC) is before as_of; "in the last N days" means
--             1 <= as_of - date <= N, with N = $recent_days (the *_90d columns) or
--             $year_days (the *_365d columns)
--   behavior  from counted orders (date before as_of); null without any, except the *_90d and
--             *_365d counts and sums, which are 0
--   shares    channel shares and refund_rate are fractions of counted orders; top_category is
--             the category with the most counted orders (ties: alphabetical)
--   engagement from events in the window; rates are opened / sent and clicked / sent, null
--             when nothing was sent; social_interactions_90d counts social_follow, _like,
--             _share and _comment events, social_shares_90d the shares, reviews_365d reviews
--   demographic  age in whole years at as_of; age_band from $age_band_edges ('18,25,35'
--             gives <18, 18-24, 25-34, 35+); income_band from $income_band_edges and
--             $income_band_labels (one more label than edges; an edge starts its band)
--   psychographic  interest_<name>: the score of the latest answer (before as_of) for that
--             interest, the higher score on a tie; top_interest: the highest of them, ties in
--             the contract's order (sustainability, technology, fitness, luxury, family,
--             travel, value); null when the customer answered nothing
-- Orders and events have UTC timestamps, so a row's date is before as_of exactly when the
-- timestamp is before as_of's midnight, and 1 <= as_of - date <= N exactly when it is also at or
-- after the midnight of as_of - N. Those bounds fold to literals: no date cast per row (a chrono
-- conversion each), and dates are taken only of each customer's first and last order.
with counted_orders as (
    select
        o.customer_id,
        o.order_ts,
        o.amount,
        o.channel,
        o.category
    from orders as o
    where o.order_ts < arrow_cast(cast($as_of as date), 'Timestamp(Microsecond, Some("UTC"))')
),

-- Every category of a counted order, numbered alphabetically: a tie for the top category goes
-- to the lower number. A few rows, so they are the build side of the joins below.
category_ranks as (
    select c.category, row_number() over (order by c.category) as category_rank
    from (select distinct co.category from counted_orders as co where co.category is not null) as c
),

-- Counted orders per customer and category first, then per customer: one scan of orders gives
-- both the order features and the top category.
order_categories as (
    select
        co.customer_id,
        cr.category_rank,
        -- order_id is unique in orders (see customer_rfm.sql): this counts distinct orders.
        count(*) as orders,
        min(co.order_ts) as first_order_ts,
        max(co.order_ts) as last_order_ts,
        sum(case when co.amount < 0 then 1 else 0 end) as refunds,
        sum(
            case
                when co.order_ts >= arrow_cast(cast($as_of as date) - $recent_days, 'Timestamp(Microsecond, Some("UTC"))') then 1
                else 0
            end
        ) as orders_90d,
        sum(
            case
                when co.order_ts >= arrow_cast(cast($as_of as date) - $year_days, 'Timestamp(Microsecond, Some("UTC"))')
                    then co.amount
                else 0
            end
        ) as spend_365d,
        sum(case when co.channel = 'web' then 1 else 0 end) as web_orders,
        sum(case when co.channel = 'store' then 1 else 0 end) as store_orders,
        sum(case when co.channel = 'app' then 1 else 0 end) as app_orders
    from category_ranks as cr
    right join counted_orders as co
        on cr.category = co.category
    group by co.customer_id, cr.category_rank
),

order_features as (
    select
        oc.customer_id,
        cast(min(oc.first_order_ts) as date) as first_order_date,
        cast(max(oc.last_order_ts) as date) as last_order_date,
        sum(oc.orders) as orders,
        sum(oc.refunds) as refunds,
        sum(oc.orders_90d) as orders_90d,
        sum(oc.spend_365d) as spend_365d,
        sum(oc.web_orders) as web_orders,
        sum(oc.store_orders) as store_orders,
        sum(oc.app_orders) as app_orders,
        -- The category with the most counted orders, ties alphabetical, as one number that a
        -- plain max finds: its orders, then its rank reversed, in a decimal wide enough for
        -- any count (a max of numbers is a flat aggregate; first_value with an order by keeps
        -- a list of values per customer). Orders without a category never win.
        max(
            case
                when oc.category_rank is not null
                    then cast(oc.orders as decimal(38, 0)) * 1000000000000000000
                        + (999999999999999999 - oc.category_rank)
            end
        ) as top_category_key,
        max(case when oc.category_rank is not null then oc.orders end) as top_category_orders
    from order_categories as oc
    group by oc.customer_id
),

windowed_events as (
    select
        e.customer_id,
        e.event_type,
        e.event_ts >= arrow_cast(cast($as_of as date) - $recent_days, 'Timestamp(Microsecond, Some("UTC"))') as recent,
        e.event_ts >= arrow_cast(cast($as_of as date) - $year_days, 'Timestamp(Microsecond, Some("UTC"))') as this_year
    from events as e
    where e.event_ts < arrow_cast(cast($as_of as date), 'Timestamp(Microsecond, Some("UTC"))')
),

event_features as (
    select
        we.customer_id,
        sum(case when we.event_type = 'email_sent' and we.recent then 1 else 0 end)
            as emails_sent_90d,
        sum(case when we.event_type = 'email_open' and we.recent then 1 else 0 end)
            as emails_opened_90d,
        sum(case when we.event_type = 'email_click' and we.recent then 1 else 0 end)
            as emails_clicked_90d,
        sum(case when we.event_type = 'page_view' and we.recent then 1 else 0 end)
            as page_views_90d,
        sum(case when we.event_type = 'cart_add' and we.recent then 1 else 0 end)
            as cart_adds_90d,
        sum(case when we.event_type = 'support_ticket' and we.this_year then 1 else 0 end)
            as support_tickets_365d,
        sum(
            case
                when we.recent
                    and we.event_type in ('social_follow', 'social_like', 'social_share', 'social_comment')
                    then 1
                else 0
            end
        ) as social_interactions_90d,
        sum(case when we.event_type = 'social_share' and we.recent then 1 else 0 end)
            as social_shares_90d,
        sum(case when we.event_type = 'review' and we.this_year then 1 else 0 end)
            as reviews_365d
    from windowed_events as we
    group by we.customer_id
),

-- The latest answer per customer and interest (the higher score on one day), then per
-- customer every interest's score and the top one: two hash aggregates with first_value, no
-- window sorts, and the answers read once.
latest_answers as (
    select
        s.customer_id,
        s.interest,
        first_value(s.score order by s.answered_at desc, s.score desc) as score,
        case s.interest
            when 'sustainability' then 1
            when 'technology' then 2
            when 'fitness' then 3
            when 'luxury' then 4
            when 'family' then 5
            when 'travel' then 6
            when 'value' then 7
        end as interest_order
    from survey_responses as s
    where s.answered_at < cast($as_of as date)
    group by s.customer_id, s.interest
),

interests as (
    select
        la.customer_id,
        max(case when la.interest = 'sustainability' then la.score end) as interest_sustainability,
        max(case when la.interest = 'technology' then la.score end) as interest_technology,
        max(case when la.interest = 'fitness' then la.score end) as interest_fitness,
        max(case when la.interest = 'luxury' then la.score end) as interest_luxury,
        max(case when la.interest = 'family' then la.score end) as interest_family,
        max(case when la.interest = 'travel' then la.score end) as interest_travel,
        max(case when la.interest = 'value' then la.score end) as interest_value,
        -- The highest score; ties in the contract's order of interests.
        first_value(la.interest order by la.score desc, la.interest_order asc) as top_interest,
        first_value(la.score order by la.score desc, la.interest_order asc) as top_interest_score
    from latest_answers as la
    group by la.customer_id
),

-- The bands as ranges, one row each: [lower_edge, upper_edge), null for an open end. Edges
-- need not be sorted or distinct (a repeated edge gives an empty range that matches no one).
age_edges as (
    select cast(e.edge as int) as edge
    from (select unnest(string_to_array($age_band_edges, ',')) as edge) as e
),

age_ranges as (
    select ae.edge as lower_edge, lead(ae.edge) over (order by ae.edge) as upper_edge
    from age_edges as ae
    union all
    select null as lower_edge, min(ae.edge) as upper_edge
    from age_edges as ae
),

-- income_band is the label at 1 + the number of edges at or below the income.
income_ranges as (
    select
        cast(e.edge as double) as lower_edge,
        lead(cast(e.edge as double)) over (order by cast(e.edge as double)) as upper_edge,
        cast(1 + row_number() over (order by cast(e.edge as double)) as bigint) as label
    from (select unnest(string_to_array($income_band_edges, ',')) as edge) as e
    union all
    select null as lower_edge, min(cast(e.edge as double)) as upper_edge, cast(1 as bigint) as label
    from (select unnest(string_to_array($income_band_edges, ',')) as edge) as e
),

-- Each customer's age and bands in one pass over customers. The ranges are the left side of
-- the (range) joins so that DataFusion collects them, a few rows, and streams the customers
-- past them; a band found by a cross join and a GROUP BY customer_id cost two string
-- aggregates over customers x edges (in batches of one customer each) and two joins back.
ages as (
    select
        c.customer_id,
        cast($as_of as date) as as_of,
        cast(cast(cast($as_of as date) as bigint) - cast(c.signup_date as bigint) as int) as tenure_days,
        c.annual_income,
        cast(
            extract(year from cast($as_of as date)) - extract(year from c.birth_date)
            - case
                when extract(month from cast($as_of as date)) * 100 + extract(day from cast($as_of as date))
                    < extract(month from c.birth_date) * 100 + extract(day from c.birth_date)
                    then 1
                else 0
            end
            as int
        ) as age
    from customers as c
),

aged as (
    select
        a.customer_id,
        a.as_of,
        a.tenure_days,
        a.annual_income,
        a.age,
        ar.lower_edge as age_lower_edge,
        ar.upper_edge as age_upper_edge,
        ar.upper_edge is not null or ar.lower_edge is not null as age_banded
    from age_ranges as ar
    right join ages as a
        on (ar.lower_edge is null or ar.lower_edge <= a.age)
        and (ar.upper_edge is null or a.age < ar.upper_edge)
),

demographics as (
    select
        d.customer_id,
        d.as_of,
        d.tenure_days,
        d.age,
        d.age_lower_edge,
        d.age_upper_edge,
        d.age_banded,
        array_element(string_to_array($income_band_labels, ','), ir.label) as income_band
    from income_ranges as ir
    right join aged as d
        on (ir.lower_edge is null or ir.lower_edge <= d.annual_income)
        and (ir.upper_edge is null or d.annual_income < ir.upper_edge)
)

select
    c.customer_id,
    d.as_of,
    -- demographic
    d.age,
    arrow_cast(
        case
            when not d.age_banded then null
            when d.age_lower_edge is null then concat('<', cast(d.age_upper_edge as varchar))
            when d.age_upper_edge is null then concat(cast(d.age_lower_edge as varchar), '+')
            else concat(cast(d.age_lower_edge as varchar), '-', cast(d.age_upper_edge - 1 as varchar))
        end,
        'Utf8'
    ) as age_band,
    c.gender,
    c.annual_income,
    d.income_band,
    -- geographic
    c.country,
    c.region,
    c.city,
    -- behavioral
    c.signup_date,
    d.tenure_days,
    rfm.recency_days,
    rfm.frequency,
    rfm.monetary,
    rfm.r_score,
    rfm.f_score,
    rfm.m_score,
    cast(rfm.monetary / rfm.frequency as decimal(18, 2)) as avg_order_value,
    ofe.first_order_date,
    ofe.last_order_date,
    case
        when ofe.orders > 1
            then cast(cast(ofe.last_order_date as bigint) - cast(ofe.first_order_date as bigint) as double)
            / (ofe.orders - 1)
    end as mean_days_between_orders,
    cast(ofe.refunds as double) / ofe.orders as refund_rate,
    cast(coalesce(ofe.orders_90d, 0) as int) as orders_90d,
    cast(coalesce(ofe.spend_365d, 0) as decimal(18, 2)) as spend_365d,
    cast(ofe.web_orders as double) / ofe.orders as web_share,
    cast(ofe.store_orders as double) / ofe.orders as store_share,
    cast(ofe.app_orders as double) / ofe.orders as app_share,
    tc.category as top_category,
    case
        when tc.category is not null then cast(ofe.top_category_orders as double) / ofe.orders
    end as top_category_share,
    -- engagement
    c.email_opt_in,
    cast(coalesce(ef.emails_sent_90d, 0) as int) as emails_sent_90d,
    cast(coalesce(ef.emails_opened_90d, 0) as int) as emails_opened_90d,
    cast(coalesce(ef.emails_clicked_90d, 0) as int) as emails_clicked_90d,
    case
        when ef.emails_sent_90d > 0 then cast(ef.emails_opened_90d as double) / ef.emails_sent_90d
    end as email_open_rate_90d,
    case
        when ef.emails_sent_90d > 0 then cast(ef.emails_clicked_90d as double) / ef.emails_sent_90d
    end as email_click_rate_90d,
    cast(coalesce(ef.page_views_90d, 0) as int) as page_views_90d,
    cast(coalesce(ef.cart_adds_90d, 0) as int) as cart_adds_90d,
    cast(coalesce(ef.support_tickets_365d, 0) as int) as support_tickets_365d,
    -- psychographic
    i.interest_sustainability,
    i.interest_technology,
    i.interest_fitness,
    i.interest_luxury,
    i.interest_family,
    i.interest_travel,
    i.interest_value,
    i.top_interest,
    i.top_interest_score,
    -- social (added to v1 later, so last)
    cast(coalesce(ef.social_interactions_90d, 0) as int) as social_interactions_90d,
    cast(coalesce(ef.social_shares_90d, 0) as int) as social_shares_90d,
    cast(coalesce(ef.reviews_365d, 0) as int) as reviews_365d
-- One row per customer from six tables of one row per customer (or fewer). Each join builds
-- its hash table from the narrow table it adds and streams the wide rows joined so far past
-- it: built the other way round, every join collected all the columns joined before it.
from category_ranks as tc
right join (
    interests as i
    right join (
        event_features as ef
        right join (
            order_features as ofe
            right join (
                demographics as d
                inner join (
                    customer_rfm as rfm
                    inner join customers as c
                        on rfm.customer_id = c.customer_id
                ) on d.customer_id = c.customer_id
            ) on ofe.customer_id = c.customer_id
        ) on ef.customer_id = c.customer_id
    ) on i.customer_id = c.customer_id
) on tc.category_rank = 999999999999999999 - cast(ofe.top_category_key % 1000000000000000000 as bigint)

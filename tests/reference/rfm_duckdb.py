"""Independent RFM reference: DuckDB computes RFM from the raw CSVs, and every row of the
published `customer_segments` Delta table must match it.

    python tests/reference/rfm_duckdb.py INPUT_DIR OUTPUT_DIR [AS_OF]

Written from the spec in issue 2 / README ("RFM, exactly"), not from sql/: a bug shared by both
would have to be made twice. Prints the number of customers compared and of mismatches (with up
to 20 examples) and exits 1 on any mismatch. Needs the `duckdb` and `deltalake` Python packages
(ci/reference.sh installs them into a throwaway virtualenv).
"""

import sys
from pathlib import Path

import duckdb
from deltalake import DeltaTable

SEGMENT_MAP = [  # (segment, r_scores, f_scores), first match wins
    ("champions", {5}, {4, 5}),
    ("loyal_customers", {3, 4}, {4, 5}),
    ("new_customers", {5}, {1}),
    ("promising", {4}, {1}),
    ("potential_loyalists", {4, 5}, {2, 3}),
    ("need_attention", {3}, {3}),
    ("about_to_sleep", {3}, {1, 2}),
    ("cant_lose_them", {1, 2}, {5}),
    ("at_risk", {1, 2}, {3, 4}),
    ("hibernating", {1, 2}, {1, 2}),
]


def segment(r, f):
    if r is None:
        return "no_purchase"
    for name, rs, fs in SEGMENT_MAP:
        if r in rs and f in fs:
            return name
    raise AssertionError(f"no segment for r={r} f={f}")


def main():
    input_dir, output_dir = Path(sys.argv[1]), Path(sys.argv[2])
    as_of = sys.argv[3] if len(sys.argv) > 3 else None
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.execute(
        f"""create table orders as select * from read_csv('{input_dir}/orders.csv', header = true,
        columns = {{'order_id': 'varchar', 'customer_id': 'varchar', 'order_ts': 'timestamptz',
                   'amount': 'decimal(12,2)', 'currency': 'varchar', 'category': 'varchar',
                   'channel': 'varchar', 'campaign_id': 'varchar'}})"""
    )
    con.execute(
        f"""create table customers as select customer_id from read_csv('{input_dir}/customers.csv',
        header = true, all_varchar = true)"""
    )
    if as_of is None:
        as_of = con.execute(
            "select cast(max(order_ts)::date + 1 as varchar) from orders"
        ).fetchone()[0]
    rows = con.execute(
        f"""
        with o as (
            select customer_id, order_id, amount, order_ts::date as d
            from orders where order_ts::date < date '{as_of}'
        ), per as (
            select customer_id, date '{as_of}' - max(d) as recency_days,
                   count(distinct order_id) as frequency, sum(amount) as monetary
            from o group by customer_id
        ), n as (select count(*) as n from per)
        select c.customer_id, p.recency_days, p.frequency, p.monetary,
               1 + (5 * (rank() over (order by p.recency_days desc) - 1)) // n.n,
               1 + (5 * (rank() over (order by p.frequency) - 1)) // n.n,
               1 + (5 * (rank() over (order by p.monetary) - 1)) // n.n
        from customers c left join per p using (customer_id) cross join n
        where p.customer_id is not null
        union all
        select c.customer_id, null, null, null, null, null, null
        from customers c anti join per p using (customer_id)
        """
    ).fetchall()
    expected = {}
    for cid, rec, freq, mon, r, f, m in rows:
        expected[cid] = (as_of, rec, freq, mon, r, f, m, segment(r, f))

    table = DeltaTable(str(output_dir / "customer_segments")).to_pyarrow_table()
    actual = {}
    for row in table.to_pylist():
        actual[row["customer_id"]] = (
            str(row["as_of"]), row["recency_days"], row["frequency"], row["monetary"],
            row["r_score"], row["f_score"], row["m_score"], row["rfm_segment"],
        )

    mismatches = []
    for cid in sorted(set(expected) | set(actual)):
        if expected.get(cid) != actual.get(cid):
            mismatches.append(f"{cid}: expected {expected.get(cid)}, got {actual.get(cid)}")
    print(f"rfm reference: {len(expected)} customers expected, {len(actual)} published, "
          f"{len(mismatches)} mismatches (as_of {as_of})")
    for line in mismatches[:20]:
        print("  " + line)
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()

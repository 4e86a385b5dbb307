"""Independent CLV reference: Python's `lifetimes` (0.11.3) against segflow's customer_clv.

    python tests/reference/clv_lifetimes.py check INPUT_DIR OUTPUT_DIR [AS_OF]
    python tests/reference/clv_lifetimes.py cdnow SEGFLOW_BIN WORK_DIR

`check` reads orders.csv under INPUT_DIR and the customer_clv and clv_model tables a run of the
default pipeline published under OUTPUT_DIR (for AS_OF, or the default: the day after the
latest order). It checks, for every customer:
  - the summary: lifetimes' `summary_data_from_transaction_data` with freq='D' and
    observation_period_end = as_of - 1 day gives the same frequency (repeat_purchases), recency
    (repeat_recency_days), T (observed_days) and monetary_value (avg_repeat_amount; lifetimes
    writes 0 where segflow writes null, without repeat purchases), and the same customers;
  - the predictions at segflow's fitted parameters (clv_model): lifetimes'
    `conditional_probability_alive` (p_alive),
    `conditional_expected_number_of_purchases_up_to_time(30 * months)` (expected_purchases),
    `conditional_expected_average_profit` (expected_order_value) and `customer_lifetime_value`
    with freq='D' (predicted_clv), each within 1e-6 relative (1e-12 absolute for values near 0).

`cdnow` writes the CDNOW sample (tests/data/cdnow, Fader, Hardie and Lee 2005) as orders.csv and
customers.csv, runs tests/reference/clv_cdnow.yaml on it with as_of 1997-10-01, checks that the
fitted parameters are FHL's (r 0.2426, alpha / 7 4.4136, a 0.7929, b 2.4259, LL -9582.4 in
weeks; Gamma-Gamma p 6.25, q 3.74, gamma 15.44 on the 946 repeat buyers; all within 0.1%) and
lifetimes' own fits on the same summary (within 0.1%), then runs `check` on it.

Written from lifetimes' definitions, not from segflow's SQL or Rust. Exits 1 on any mismatch,
printing up to 10 examples. Needs lifetimes, pandas and deltalake (ci/pyenv.sh).
"""

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from deltalake import DeltaTable
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import summary_data_from_transaction_data

warnings.simplefilter("ignore")  # lifetimes on current pandas: deprecation notices only

REL, ABS = 1e-6, 1e-12
ROOT = Path(__file__).resolve().parents[2]


def close(a, b, rel=REL, abs_=ABS):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.abs(a - b) <= np.maximum(rel * np.maximum(np.abs(a), np.abs(b)), abs_)


def report(name, ok, frame):
    bad = frame[~ok]
    if len(bad):
        print(f"clv {name}: {len(bad)} of {len(frame)} customers differ, e.g.")
        print(bad.head(10).to_string())
        return False
    return True


def orders_summary(input_dir, as_of):
    orders = pd.read_csv(
        Path(input_dir) / "orders.csv",
        usecols=["customer_id", "order_ts", "amount"],
        dtype={"customer_id": str, "order_ts": str, "amount": float},
    )
    # The order's date in UTC, as a plain day: lifetimes groups transactions by period.
    orders["day"] = (
        pd.to_datetime(orders["order_ts"], utc=True).dt.tz_localize(None).dt.normalize()
    )
    if as_of is None:
        as_of = (orders["day"].max() + pd.Timedelta(days=1)).date().isoformat()
    end = pd.Timestamp(as_of) - pd.Timedelta(days=1)
    counted = orders[orders["day"] <= end]
    summary = summary_data_from_transaction_data(
        counted,
        "customer_id",
        "day",
        monetary_value_col="amount",
        observation_period_end=end,
        freq="D",
    )
    return summary, as_of


def check(input_dir, output_dir, as_of, months=12, discount=0.01):
    summary, as_of = orders_summary(input_dir, as_of)
    clv = DeltaTable(str(Path(output_dir) / "customer_clv")).to_pandas()
    clv = clv.set_index("customer_id").sort_index()
    summary = summary.sort_index()
    ok = True
    if list(clv.index) != list(summary.index):
        only_ours = sorted(set(clv.index) - set(summary.index))[:10]
        only_theirs = sorted(set(summary.index) - set(clv.index))[:10]
        print(f"clv customers differ: only segflow {only_ours}, only lifetimes {only_theirs}")
        return False
    frame = pd.DataFrame(
        {
            "x": clv["repeat_purchases"],
            "x_lt": summary["frequency"],
            "t_x": clv["repeat_recency_days"],
            "t_x_lt": summary["recency"],
            "T": clv["observed_days"],
            "T_lt": summary["T"],
            "m": clv["avg_repeat_amount"].fillna(0.0),
            "m_lt": summary["monetary_value"],
        }
    )
    same = (
        (frame["x"] == frame["x_lt"])
        & (frame["t_x"] == frame["t_x_lt"])
        & (frame["T"] == frame["T_lt"])
        & close(frame["m"], frame["m_lt"], 1e-9, 1e-9)
        & (clv["avg_repeat_amount"].isna() == (clv["repeat_purchases"] == 0))
    )
    ok &= report("summary", same, frame)

    model = DeltaTable(str(Path(output_dir) / "clv_model")).to_pandas()
    params = {(r.model, r.parameter): r.value for r in model.itertuples()}
    bgf = BetaGeoFitter()
    bgf.params_ = pd.Series(
        {k: params[("bgnbd", k)] for k in ["r", "alpha", "a", "b"]}
    )
    # fit() sets this alias, which customer_lifetime_value calls.
    bgf.predict = bgf.conditional_expected_number_of_purchases_up_to_time
    ggf = GammaGammaFitter()
    ggf.params_ = pd.Series(
        {"p": params[("gamma_gamma", "p")], "q": params[("gamma_gamma", "q")],
         "v": params[("gamma_gamma", "gamma")]}
    )
    x, t_x, T, m = summary["frequency"], summary["recency"], summary["T"], summary["monetary_value"]
    expected = pd.DataFrame(
        {
            "p_alive": bgf.conditional_probability_alive(x, t_x, T),
            "expected_purchases": bgf.conditional_expected_number_of_purchases_up_to_time(
                30 * months, x, t_x, T
            ),
            "expected_order_value": ggf.conditional_expected_average_profit(x, m),
            "predicted_clv": ggf.customer_lifetime_value(
                bgf, x, t_x, T, m, time=months, discount_rate=discount, freq="D"
            ),
        },
        index=summary.index,
    )
    for column in expected.columns:
        got, want = clv[column], expected[column]
        frame = pd.DataFrame({"segflow": got, "lifetimes": want, "x": x, "t_x": t_x, "T": T})
        ok &= report(column, close(got, want), frame)
    n = len(clv)
    print(
        f"clv: {n} customers (as_of {as_of}): summary and p_alive, expected_purchases, "
        f"expected_order_value, predicted_clv {'match' if ok else 'DIFFER from'} lifetimes"
    )
    return ok


# Fader, Hardie and Lee (2005): BG/NBD on CDNOW with weekly alpha; Fader, Hardie and Lee's
# note on the Gamma-Gamma model (2013) for the spend parameters.
FHL = {
    ("bgnbd", "r"): 0.2426,
    ("bgnbd", "alpha"): 4.4136 * 7,
    ("bgnbd", "a"): 0.7929,
    ("bgnbd", "b"): 2.4259,
    ("gamma_gamma", "p"): 6.25,
    ("gamma_gamma", "q"): 3.74,
    ("gamma_gamma", "gamma"): 15.44,
}


def cdnow(binary, work):
    work = Path(work)
    inp, out = work / "in", work / "out"
    inp.mkdir(parents=True, exist_ok=True)
    rows = pd.read_csv(
        ROOT / "tests/data/cdnow/CDNOW_sample.txt",
        sep=r"\s+",
        header=None,
        names=["customer_id", "sample_id", "date", "cds", "amount"],
        dtype={"customer_id": str, "date": str},
    )
    orders = pd.DataFrame(
        {
            "order_id": [f"O{i:05d}" for i in range(len(rows))],
            "customer_id": rows["customer_id"],
            "order_ts": pd.to_datetime(rows["date"], format="%Y%m%d").dt.strftime(
                "%Y-%m-%dT12:00:00Z"
            ),
            "amount": rows["amount"].map(lambda a: f"{a:.2f}"),
            "currency": "USD",
            "category": "music",
            "channel": "web",
            "campaign_id": "",
        }
    )
    orders.to_csv(inp / "orders.csv", index=False)
    customers = pd.DataFrame({"customer_id": sorted(rows["customer_id"].unique())})
    for c in ["signup_date", "birth_date", "gender", "country", "region", "city",
              "annual_income", "email_opt_in"]:
        customers[c] = ""
    customers.to_csv(inp / "customers.csv", index=False)
    as_of = "1997-10-01"
    run = subprocess.run(
        [binary, "run", str(ROOT / "tests/reference/clv_cdnow.yaml"), "--var", f"input={inp}",
         "--var", f"output={out}", "--var", f"as_of={as_of}"],
        capture_output=True, text=True,
    )
    if run.returncode != 0:
        print(run.stdout, run.stderr)
        return False
    model = DeltaTable(str(out / "clv_model")).to_pandas()
    ours = {(r.model, r.parameter): r.value for r in model.itertuples()}
    ok = True
    ll = model[model.model == "bgnbd"].log_likelihood.iloc[0]
    # The likelihood in weeks differs from the one in days by x * ln 7 per customer.
    summary, _ = orders_summary(inp, as_of)
    ll_weeks = ll + summary["frequency"].sum() * np.log(7)
    customers = dict(zip(model.model, model.customers))

    bgf = BetaGeoFitter().fit(summary["frequency"], summary["recency"], summary["T"])
    repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    ggf = GammaGammaFitter().fit(repeat["frequency"], repeat["monetary_value"])
    theirs = dict(bgf.params_.rename(lambda k: ("bgnbd", k)))
    theirs.update({("gamma_gamma", {"v": "gamma"}.get(k, k)): v for k, v in ggf.params_.items()})
    for key, value in ours.items():
        fhl = FHL[key]
        # FHL's published digits: within 0.1%, or half a unit in their last place.
        digits = len(str(fhl).split(".")[1]) if key != ("bgnbd", "alpha") else 4
        tolerance = max(1e-3 * abs(fhl), 0.5 * 10 ** -digits * (7 if key[1] == "alpha" else 1))
        if abs(value - fhl) > tolerance:
            print(f"cdnow {key}: segflow {value:.6f}, FHL {fhl}")
            ok = False
        if abs(value - theirs[key]) > 1e-3 * abs(theirs[key]):
            print(f"cdnow {key}: segflow {value:.6f}, lifetimes {theirs[key]:.6f}")
            ok = False
    if abs(ll_weeks - -9582.4) > 0.05 or customers != {"bgnbd": 2357, "gamma_gamma": 946}:
        print(f"cdnow: LL in weeks {ll_weeks:.4f} (FHL -9582.4), customers {customers}")
        ok = False
    print(
        "cdnow: r {:.6f}, alpha {:.4f} (/7 {:.6f}), a {:.6f}, b {:.6f}, LL weeks {:.4f}; "
        "p {:.6f}, q {:.6f}, gamma {:.6f} {}".format(
            ours[("bgnbd", "r")], ours[("bgnbd", "alpha")], ours[("bgnbd", "alpha")] / 7,
            ours[("bgnbd", "a")], ours[("bgnbd", "b")], ll_weeks, ours[("gamma_gamma", "p")],
            ours[("gamma_gamma", "q")], ours[("gamma_gamma", "gamma")],
            "match FHL and lifetimes" if ok else "DIFFER",
        )
    )
    return check(inp, out, as_of) and ok


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "check":
        ok = check(args[0], args[1], args[2] if len(args) > 2 else None)
    elif mode == "cdnow":
        ok = cdnow(args[0], args[1])
    else:
        raise SystemExit(f"unknown mode {mode}; use check or cdnow")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

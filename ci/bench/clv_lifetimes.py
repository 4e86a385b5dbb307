"""The CLV peer of ci/bench.sh: Python lifetimes (0.11.3) on the summary segflow's full pipeline
published, timed the way segflow's clv stage is: the BG/NBD fit, the Gamma-Gamma fit (on the
customers with repeat purchases and a positive mean repeat amount), then every customer's
p_alive, expected purchases over 360 days, expected order value and 12-month discounted CLV.

    clv_lifetimes.py OUTPUT_DIR --record FILE [--timeout SECONDS]

Reads customer_clv (repeat_purchases, repeat_recency_days, observed_days, avg_repeat_amount)
and clv_model from OUTPUT_DIR; appends one JSON line to FILE: seconds per step and in all (null
when lifetimes failed or did not finish within the timeout, with the reason), and the largest
relative difference between lifetimes' parameters and segflow's. The timeout runs the work in a
child process, so a run that does not finish is stopped, not waited for.
"""

import argparse
import json
import multiprocessing as mp
import time
import warnings
from pathlib import Path


def work(output_dir: str, queue) -> None:
    warnings.simplefilter("ignore")
    import numpy as np
    from deltalake import DeltaTable
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    clv = DeltaTable(str(Path(output_dir) / "customer_clv")).to_pandas(
        columns=["repeat_purchases", "repeat_recency_days", "observed_days", "avg_repeat_amount"]
    )
    x = clv["repeat_purchases"].astype(float)
    t_x = clv["repeat_recency_days"].astype(float)
    T = clv["observed_days"].astype(float)
    m = clv["avg_repeat_amount"].fillna(0.0)
    laps = {}
    start = time.perf_counter()
    bgf = BetaGeoFitter().fit(x, t_x, T)
    laps["bgnbd_fit"] = time.perf_counter() - start
    step = time.perf_counter()
    repeat = (x > 0) & (m > 0)
    ggf = GammaGammaFitter().fit(x[repeat], m[repeat])
    laps["gamma_gamma_fit"] = time.perf_counter() - step
    step = time.perf_counter()
    bgf.conditional_probability_alive(x, t_x, T)
    bgf.conditional_expected_number_of_purchases_up_to_time(360, x, t_x, T)
    ggf.conditional_expected_average_profit(x, m)
    ggf.customer_lifetime_value(bgf, x, t_x, T, m, time=12, discount_rate=0.01, freq="D")
    laps["predict"] = time.perf_counter() - step
    laps["total"] = time.perf_counter() - start

    model = DeltaTable(str(Path(output_dir) / "clv_model")).to_pandas()
    ours = {(r.model, r.parameter): r.value for r in model.itertuples()}
    theirs = {("bgnbd", k): v for k, v in bgf.params_.items()}
    theirs.update({("gamma_gamma", {"v": "gamma"}.get(k, k)): v for k, v in ggf.params_.items()})
    diff = max(abs(ours[k] - v) / abs(v) for k, v in theirs.items())
    queue.put({"seconds": laps, "customers": len(clv), "max_param_rel_diff": float(np.float64(diff))})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output")
    parser.add_argument("--record", required=True)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    queue = mp.get_context("fork").Queue()
    child = mp.get_context("fork").Process(target=work, args=(args.output, queue))
    child.start()
    child.join(args.timeout)
    if child.is_alive():
        child.kill()
        child.join()
        result = {"seconds": None, "why": f"did not finish in {args.timeout:.0f} s"}
    elif child.exitcode != 0 or queue.empty():
        result = {"seconds": None, "why": f"failed (exit {child.exitcode})"}
    else:
        result = queue.get()
    with open(args.record, "a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

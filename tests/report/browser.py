"""Opens segflow's HTML report in headless Chromium from file://, with the network off, and
checks it as a reader would see it (tests/e2e/report.rs runs it; ci/report-screenshot.sh takes
the README's screenshot with it):

- no console error or uncaught exception, and no request but the file itself;
- every chart's container holds a drawn SVG (nonzero size), for every chart the tables call for;
- the numbers in the DOM (`td[data-value]`) are the published tables' own: every row and
  column of segment_profiles, and this snapshot's segment_migrations, read with the `deltalake`
  package at the versions `_published.json` names;
- the file is self-contained (no http(s) src or href) and under the size limit;
- printed, the navigation is hidden and every data table shows, and a PDF comes out;

then takes a screenshot. Prints one JSON line: render time, size, charts, cells compared.

Chromium is driven over the DevTools protocol (websocket-client); it starts with a fresh
profile, the flags that keep it from calling home, and every host name unresolvable, and the
page's network is emulated offline, so a request that should not happen fails and is seen.
"""

import argparse
import base64
import decimal
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import websocket
from deltalake import DeltaTable


class Browser:
    def __init__(self, chromium, width, height):
        self.profile = tempfile.mkdtemp(prefix="segflow-chromium-")
        self.proc = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--host-resolver-rules=MAP * ~NOTFOUND",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + 60
        while not os.path.exists(port_file) or os.path.getsize(port_file) == 0:
            if self.proc.poll() is not None:
                raise SystemExit(f"chromium exited: {self.proc.stderr.read().decode()[-2000:]}")
            if time.time() > deadline:
                raise SystemExit("chromium did not open its DevTools port in 60 s")
            time.sleep(0.05)
        time.sleep(0.05)
        port, path = open(port_file).read().split("\n")[:2]
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=60)
        self.next_id = 0
        self.events = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]

    def call(self, method, params=None, session=True):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session and getattr(self, "session", None):
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise SystemExit(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method, timeout=60):
        deadline = time.time() + timeout
        for e in self.events:
            if e["method"] == method:
                return e
        while time.time() < deadline:
            reply = json.loads(self.ws.recv())
            if "method" in reply:
                self.events.append(reply)
                if reply["method"] == method:
                    return reply
        raise SystemExit(f"no {method} within {timeout} s")

    def evaluate(self, expression):
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise SystemExit(f"evaluating the page failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self):
        try:
            self.call("Browser.close", session=False)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


# Everything the checks need from the page, in one evaluation.
READ_PAGE = r"""
(() => {
  const charts = Array.from(document.querySelectorAll('figure.chart')).map(f => {
    const svg = f.querySelector('.plot svg');
    const box = svg ? svg.getBoundingClientRect() : null;
    return {
      chart: f.dataset.chart,
      svg: !!svg,
      width: box ? box.width : 0,
      height: box ? box.height : 0,
      shapes: svg ? svg.querySelectorAll('rect, polyline, path, circle, line').length : 0,
    };
  });
  const tables = {};
  document.querySelectorAll('table[data-table]').forEach(t => {
    tables[t.dataset.table] = Array.from(t.querySelectorAll('tbody tr')).map(tr => {
      const row = {};
      tr.querySelectorAll('td[data-col]').forEach(td => { row[td.dataset.col] = td.dataset.value ?? null; });
      return row;
    });
  });
  const nav = performance.getEntriesByType('navigation')[0];
  return {
    charts,
    tables,
    segmentations: Array.from(document.querySelectorAll('section[data-segmentation]')).map(s => s.dataset.segmentation),
    load_ms: nav ? nav.loadEventEnd : null,
    dom_ms: nav ? nav.domContentLoadedEventEnd : null,
    errors_shown: document.querySelectorAll('.error').length,
  };
})()
"""


def table_at(pointer, name):
    entry = pointer["tables"][name]
    return DeltaTable(entry["url"], version=entry["version"]).to_pyarrow_table().to_pylist()


def same(dom, value):
    """A DOM data-value against the table's value."""
    if value is None:
        return dom in ("", None)
    if isinstance(value, bool):
        return dom == str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return dom == "NaN"
        return dom not in ("", None) and float(dom) == value
    if isinstance(value, decimal.Decimal):
        return dom not in ("", None) and decimal.Decimal(dom) == value
    return dom == str(value)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chromium", required=True)
    ap.add_argument("--report", required=True, help="the report's index.html")
    ap.add_argument("--runs", required=True, help="the runs folder with _published.json")
    ap.add_argument("--screenshot", help="PNG of the top of the page to write")
    ap.add_argument(
        "--element-shot",
        nargs=2,
        action="append",
        default=[],
        metavar=("SELECTOR", "PNG"),
        help="also a PNG of the element SELECTOR matches (repeatable)",
    )
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=1600)
    ap.add_argument("--max-bytes", type=int, default=3 * 1024 * 1024)
    args = ap.parse_args()

    failures = []
    html = open(args.report, encoding="utf-8").read()
    size = len(html.encode("utf-8"))
    if size > args.max_bytes:
        failures.append(f"the report is {size} bytes, over {args.max_bytes}")
    remote = re.findall(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//[^"'\s>]*""", html, re.I)
    if remote:
        failures.append(f"the report links outside itself: {remote[:5]}")
    if re.search(r"@import|url\(\s*['\"]?(?:https?:)?//", html, re.I):
        failures.append("the report's CSS loads something from the network")

    pointer = json.load(open(os.path.join(args.runs, "_published.json")))
    profiles = table_at(pointer, "segment_profiles")
    segments = table_at(pointer, "customer_segments")
    as_of = str(max(r["as_of"] for r in segments))
    migrations = [r for r in table_at(pointer, "segment_migrations") if str(r["to_as_of"]) == as_of]

    url = "file://" + os.path.abspath(args.report)
    browser = Browser(args.chromium, args.width, args.height)
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable")
        browser.call(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": args.width, "height": args.height, "deviceScaleFactor": 1, "mobile": False},
        )
        started = time.time()
        browser.call("Page.navigate", {"url": url})
        browser.wait_for("Page.loadEventFired")
        wall_ms = (time.time() - started) * 1000
        page = browser.evaluate(READ_PAGE)
        if args.screenshot:
            shot = browser.call("Page.captureScreenshot", {"format": "png"})
            with open(args.screenshot, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
        for selector, path in args.element_shot:
            x, y, w, h = browser.evaluate(
                "(() => { const e = document.querySelector(%s); e.scrollIntoView();"
                " const r = e.getBoundingClientRect();"
                " return [r.x, r.y + window.scrollY, r.width, r.height]; })()" % json.dumps(selector)
            )
            clip = {"x": x, "y": y, "width": w, "height": h, "scale": 1}
            shot = browser.call(
                "Page.captureScreenshot",
                {"format": "png", "clip": clip},
            )
            with open(path, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
        # Printing: the print stylesheet hides the navigation and shows the data tables of
        # closed <details> (the script also opens them on beforeprint; this checks the CSS
        # alone, as a browser without the script prints), and a PDF comes out.
        browser.call("Emulation.setEmulatedMedia", {"media": "print"})
        printed = browser.evaluate(
            "(() => ({ nav: getComputedStyle(document.querySelector('nav')).display,"
            " hidden_tables: Array.from(document.querySelectorAll('details:not([open]) table'))"
            ".filter(t => !t.checkVisibility()).length,"
            " tables: document.querySelectorAll('details table').length }))()"
        )
        browser.call("Emulation.setEmulatedMedia", {"media": ""})
        pdf = base64.b64decode(browser.call("Page.printToPDF", {})["data"])
        # Late console messages (the script runs at the end of the body) are in by now.
        browser.evaluate("new Promise(r => setTimeout(r, 200))")
    finally:
        browser.close()

    # Console errors, exceptions and requests.
    for e in browser.events:
        m, p = e["method"], e.get("params", {})
        if m == "Runtime.exceptionThrown":
            failures.append(f"uncaught exception: {p['exceptionDetails'].get('text')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            failures.append(f"console {p['type']}: {[a.get('value') for a in p.get('args', [])]}")
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            failures.append(f"browser error: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif m == "Network.requestWillBeSent":
            req = p["request"]["url"]
            if req != url and not req.startswith("data:"):
                failures.append(f"a request left the file: {req}")
    if printed["nav"] != "none":
        failures.append(f"printed, the navigation shows (display {printed['nav']})")
    if printed["hidden_tables"] or not printed["tables"]:
        failures.append(
            f"printed, {printed['hidden_tables']} of {printed['tables']} data tables stay hidden"
        )
    if not pdf.startswith(b"%PDF") or len(pdf) < 10_000:
        failures.append(f"printing to PDF gave {len(pdf)} bytes")
    if page["errors_shown"]:
        failures.append(f"{page['errors_shown']} chart(s) say they could not be drawn")

    # Charts: those the tables call for, each drawn.
    seg_names = sorted({r["segmentation"] for r in profiles})
    expected = {f"sizes-{s}" for s in seg_names} | {"rfm-grid", "elbow", "silhouette"}
    expected |= {f"migrations-{s}" for s in {r["segmentation"] for r in migrations}}
    expected |= {f"history-{s}" for s in {r["segmentation"] for r in migrations}}
    if "campaign_performance" in pointer["tables"]:
        expected.add("campaigns")
    if "customer_clv" in pointer["tables"]:
        expected |= {"clv-per-segment", "p-alive"}
    drawn = {c["chart"] for c in page["charts"] if c["svg"] and c["width"] > 0 and c["height"] > 0 and c["shapes"] > 0}
    missing = sorted(expected - drawn)
    if missing:
        failures.append(f"charts not drawn: {missing}; the page has {[c['chart'] for c in page['charts']]}")
    if sorted(page["segmentations"]) != seg_names:
        failures.append(f"segmentation sections {page['segmentations']}, tables have {seg_names}")

    # Numbers: every profile row and column, and every migration cell.
    compared = 0
    for s in seg_names:
        dom = page["tables"].get(f"profiles-{s}", [])
        rows = [r for r in profiles if r["segmentation"] == s]
        if len(dom) != len(rows):
            failures.append(f"profiles-{s}: {len(dom)} rows on the page, {len(rows)} in segment_profiles")
        by_segment = {r.get("segment"): r for r in dom}
        for r in rows:
            shown = by_segment.get(r["segment"])
            if shown is None:
                failures.append(f"profiles-{s}: segment {r['segment']} is not on the page")
                continue
            for col, value in r.items():
                compared += 1
                if not same(shown.get(col), value):
                    failures.append(f"profiles-{s} {r['segment']}.{col}: page {shown.get(col)!r}, table {value!r}")
    for s in sorted({r["segmentation"] for r in migrations}):
        dom = page["tables"].get(f"migrations-{s}", [])
        rows = [r for r in migrations if r["segmentation"] == s]
        cells = {(r.get("from_segment"), r.get("to_segment")): r.get("customers") for r in dom}
        if len(dom) != len(rows):
            failures.append(f"migrations-{s}: {len(dom)} rows on the page, {len(rows)} in segment_migrations")
        for r in rows:
            compared += 1
            if not same(cells.get((r["from_segment"], r["to_segment"])), r["customers"]):
                failures.append(f"migrations-{s} {r['from_segment']}->{r['to_segment']}: page {cells.get((r['from_segment'], r['to_segment']))!r}, table {r['customers']}")

    print(
        json.dumps(
            {
                "bytes": size,
                "load_ms": page["load_ms"],
                "dom_content_loaded_ms": page["dom_ms"],
                "wall_ms": round(wall_ms, 1),
                "charts": len(page["charts"]),
                "pdf_bytes": len(pdf),
                "cells_compared": compared,
                "failures": len(failures),
            }
        )
    )
    if failures:
        for f in failures[:50]:
            print("FAIL:", f, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""End-to-end check of hubgate's observability against a real Prometheus.

Starts the HubSpot simulator (with an outside consumer spending one owner's burst budget, so
HubSpot answers 429s), hubgate in front of it, and Prometheus scraping hubgate's admin
listener every second with prometheus/alerts.yml loaded. Drives load through hubgate, then:

- runs `promtool check metrics` on a real /metrics scrape;
- queries every PromQL expression of grafana/dashboards/hubgate.json (template variables
  substituted) through Prometheus's HTTP API and requires data from each;
- for every rule of prometheus/alerts.yml, requires the rule to evaluate without error and
  every side of its top-level comparisons ("signal > threshold") that names a metric to
  return data (a threshold that is not crossed is fine: the firing logic is
  promtool test rules' job);
- checks /admin/budgets answers JSON.

Exits 1 naming every expression without data. Standard library only.
Usage: prometheus_e2e.py HUBGATE_BINARY REPO_ROOT
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

LOAD_SECONDS_BEFORE_CHECK = 20
CHECK_DEADLINE_SECONDS = 60
RATE_INTERVAL = "20s"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, method="GET", body=None, headers=None, timeout=10):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for(url, what, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            status, _ = http(url, timeout=2)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"FAIL: {what} did not come up at {url} within {seconds} s")


def dashboard_expressions(path):
    with open(path) as f:
        dashboard = json.load(f)
    out = []

    def walk(panels):
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                if target.get("expr"):
                    out.append((f"dashboard panel {panel.get('title')!r} {target.get('refId')}", target["expr"]))

    walk(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            match = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", query or "")
            if match:
                # label_values(selector, label) needs the selector to have series.
                out.append((f"dashboard variable ${var['name']}", match.group(1)))
            elif query:
                out.append((f"dashboard variable ${var['name']}", query))
    return out


def substitute(expr):
    """Grafana template variables -> values Prometheus accepts."""
    expr = expr.replace("$__rate_interval", RATE_INTERVAL).replace("${__rate_interval}", RATE_INTERVAL)
    expr = expr.replace("$__interval", RATE_INTERVAL).replace("${__interval}", RATE_INTERVAL)
    # Every other variable is an owner filter used as a regex: match all.
    expr = re.sub(r"\$\{(\w+)(:\w+)?\}", ".*", expr)
    expr = re.sub(r"\$(\w+)", ".*", expr)
    return expr


COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
SET_OPS = ("and", "or", "unless")


def split_top_level(expr):
    """Splits at top-level comparison and set operators (outside (), {}, [] and quotes)."""
    parts, depth, quote, start, i = [], 0, None, 0, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif depth == 0:
            op = next((o for o in COMPARISONS if expr.startswith(o, i)), None)
            if op is None:
                for word in SET_OPS:
                    if re.match(rf"(?<![\w]){word}(?![\w])", expr[i:]) and (i == 0 or not expr[i - 1].isalnum()):
                        op = word
                        break
            if op:
                parts.append(expr[start:i])
                i += len(op)
                start = i
                continue
        i += 1
    parts.append(expr[start:])
    cleaned = []
    for part in parts:
        part = part.strip()
        # Modifiers of the operator belong to neither side.
        while True:
            m = re.match(r"(bool|on\s*\([^)]*\)|ignoring\s*\([^)]*\)|group_left\s*(\([^)]*\))?|group_right\s*(\([^)]*\))?)\s*", part)
            if not m or not m.group(0):
                break
            part = part[m.end():]
        cleaned.append(part)
    return cleaned


def names_a_metric(expr):
    return re.search(r"[a-zA-Z_:][a-zA-Z0-9_:]*\s*[{\[]|hubgate_\w+|\bup\b", expr) is not None


def alert_expressions(path):
    text = open(path).read()
    out = []
    # The rules file is YAML; without a YAML parser in the standard library, read the two
    # shapes alerts.yml uses: `expr: one line` and `expr: |` followed by an indented block.
    lines = text.splitlines()
    i = 0
    alert = None
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*-?\s*alert:\s*(\S+)", line)
        if m:
            alert = m.group(1)
        m = re.match(r"(\s*)expr:\s*(.*)$", line)
        if m:
            indent, rest = len(m.group(1)), m.group(2).strip()
            if rest in ("|", ">", "|-", ">-"):
                block = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i].strip())
                    i += 1
                out.append((alert, " ".join(block).strip()))
                continue
            out.append((alert, rest.strip("'\"")))
        i += 1
    return out


class Load:
    """Callers hammering hubgate until stopped; counts statuses."""

    def __init__(self, proxy):
        self.proxy = proxy
        self.stop = threading.Event()
        self.statuses = {}
        self.lock = threading.Lock()
        self.threads = []

    def caller(self, token, method, path, body):
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        while not self.stop.is_set():
            try:
                status, _ = http(f"http://{self.proxy}{path}", method, body, headers, timeout=15)
            except OSError:
                status = "error"
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
            if status != 200:
                # Refused at once (deadline, queue): back off like a polite client rather
                # than spin on the two shared cores.
                time.sleep(0.2)

    def start(self):
        plan = []
        # The outside consumer spends owner 2001:1001's whole burst window in blocks, so
        # HubSpot 429s hubgate's calls for it however much room hubgate leaves it (a client
        # that steadily spends part of the window draws none: hubgate learns its use); four
        # callers per owner make queues.
        for token in ["pat-na1-sim-1", "oauth-sim-1", "pat-na1-sim-2"]:
            plan += [(token, "GET", "/crm/v3/objects/contacts?limit=1", None)] * 4
        plan += [("pat-na1-sim-2", "POST", "/crm/v3/objects/contacts/search", b"{}")] * 3
        for args in plan:
            t = threading.Thread(target=self.caller, args=args, daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=20)


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    binary, root = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    prometheus = shutil.which("prometheus")
    promtool = shutil.which("promtool")
    if not prometheus or not promtool:
        raise SystemExit("FAIL: prometheus and promtool are required (apt-get install prometheus)")
    work = tempfile.mkdtemp(prefix="hubgate-prom-e2e-")
    sim_port, proxy_port, admin_port, prom_port = free_port(), free_port(), free_port(), free_port()
    sim, proxy, admin, prom = (f"127.0.0.1:{p}" for p in (sim_port, proxy_port, admin_port, prom_port))

    with open(os.path.join(work, "sim.toml"), "w") as f:
        f.write(
            "burst_limit = 10\nburst_window_ms = 2000\nsearch_limit = 2\nsearch_window_ms = 1000\n"
            "daily_limit = 100000\ngenerate_tokens = 2\n"
            "[[outside]]\napp_id = 2001\nportal_id = 1001\nper_window = 10\n"
            'pattern = "bursty"\nevery_ms = 1500\n'
        )
    with open(os.path.join(work, "hubgate.toml"), "w") as f:
        f.write(
            f'[server]\nlisten = "{proxy}"\nadmin_listen = "{admin}"\n'
            f'[upstream]\nbase_url = "http://{sim}"\n'
            "[budgets]\nburst_limit = 10\nburst_window_ms = 2000\nburst_margin_ms = 20\n"
            "search_limit = 2\nsearch_window_ms = 1000\nsearch_margin_ms = 20\ndaily_limit = 100000\n"
            "[queue]\nmax_wait_ms = 1500\n"
            '[log]\nlevel = "warn"\n'
            # The token broker, for its panels and alerts: the simulator's generated app 3001.
            '[[apps]]\napp_id = 3001\nclient_id = "sim-client-3001"\nclient_secret = "sim-secret-3001"\n'
            'redirect_uri = "http://127.0.0.1/oauth/callback"\n'
            f'[oauth]\nstore_path = "{os.path.join(work, "installs.redb")}"\n'
            f'key_file = "{os.path.join(work, "secret.key")}"\n'
        )
    with open(os.path.join(work, "secret.key"), "w") as f:
        f.write(os.urandom(32).hex())
    with open(os.path.join(work, "prometheus.yml"), "w") as f:
        f.write(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {os.path.join(root, 'prometheus', 'alerts.yml')}\n"
            "scrape_configs:\n  - job_name: hubgate\n"
            f"    static_configs:\n      - targets: ['{admin}']\n"
        )

    processes = []
    log = open(os.path.join(work, "processes.log"), "w")

    def spawn(args):
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        processes.append(p)
        return p

    load = None
    failures = []
    try:
        spawn([binary, "sim", "--listen", sim, "--config", os.path.join(work, "sim.toml")])
        wait_for(f"http://{sim}/__sim/health", "the simulator")
        spawn([binary, "--config", os.path.join(work, "hubgate.toml")])
        wait_for(f"http://{admin}/readyz", "hubgate")
        # One brokered install, imported with a refresh token the simulator mints.
        status, grant = http(
            f"http://{sim}/__sim/oauth/install", "POST",
            json.dumps({"app_id": 3001, "hub_id": 1001}).encode(),
            {"content-type": "application/json"},
        )
        assert status == 200, (status, grant)
        status, answer = http(
            f"http://{admin}/admin/installs", "POST",
            json.dumps({"app_id": 3001, "refresh_token": json.loads(grant)["refresh_token"]}).encode(),
            {"content-type": "application/json"},
        )
        assert status == 201, (status, answer)
        spawn([
            prometheus,
            f"--config.file={os.path.join(work, 'prometheus.yml')}",
            f"--storage.tsdb.path={os.path.join(work, 'data')}",
            f"--web.listen-address={prom}",
            "--log.level=warn",
        ])
        wait_for(f"http://{prom}/-/ready", "Prometheus")

        load = Load(proxy)
        load.start()
        time.sleep(LOAD_SECONDS_BEFORE_CHECK)

        # promtool check metrics on a real scrape, taken under load.
        status, metrics = http(f"http://{admin}/metrics")
        assert status == 200, status
        check = subprocess.run([promtool, "check", "metrics"], input=metrics, capture_output=True)
        if check.returncode != 0:
            failures.append("promtool check metrics: " + (check.stdout + check.stderr).decode())
        else:
            print("ok   promtool check metrics on a live /metrics scrape")
        status, budgets = http(f"http://{admin}/admin/budgets")
        budgets = json.loads(budgets)
        if status != 200 or not budgets.get("owners"):
            failures.append(f"/admin/budgets: {status} {budgets}")
        else:
            print(f"ok   /admin/budgets lists {len(budgets['owners'])} owners")

        checks = []
        for name, expr in dashboard_expressions(os.path.join(root, "grafana", "dashboards", "hubgate.json")):
            checks.append((name, substitute(expr)))
        alerts = alert_expressions(os.path.join(root, "prometheus", "alerts.yml"))
        if not alerts:
            failures.append("no alert expressions found in prometheus/alerts.yml")
        for alert, expr in alerts:
            # The whole expression must be valid PromQL (checked below through the query
            # API: errors fail, empty results are fine) and each signal must have data.
            checks.append((f"alert {alert} (whole expression, validity only)", "VALID:" + expr))
            for n, side in enumerate(split_top_level(expr)):
                if names_a_metric(side):
                    checks.append((f"alert {alert} signal {n + 1}", side))

        pending = list(checks)
        deadline = time.time() + CHECK_DEADLINE_SECONDS
        errors = {}
        while pending and time.time() < deadline:
            still = []
            for name, expr in pending:
                validity_only = expr.startswith("VALID:")
                query = expr[len("VALID:"):] if validity_only else expr
                status, body = http(f"http://{prom}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
                answer = json.loads(body)
                if answer.get("status") != "success":
                    errors[name] = (query, answer.get("error"))
                    continue
                if validity_only or answer["data"]["result"]:
                    print(f"ok   {name}: {query}")
                else:
                    still.append((name, expr))
            pending = still
            if pending:
                time.sleep(2)
        for name, (query, error) in errors.items():
            failures.append(f"{name}: query error {error}: {query}")
        for name, expr in pending:
            failures.append(f"{name}: no data: {expr}")

        status, rules = http(f"http://{prom}/api/v1/rules")
        groups = json.loads(rules)["data"]["groups"]
        rule_count = 0
        for group in groups:
            for rule in group["rules"]:
                rule_count += 1
                if rule.get("health") != "ok":
                    failures.append(f"rule {rule['name']}: health {rule.get('health')}: {rule.get('lastError')}")
        if rule_count != len(alerts):
            failures.append(f"Prometheus loaded {rule_count} rules, alerts.yml has {len(alerts)}")
        else:
            print(f"ok   all {rule_count} alert rules evaluate without error in Prometheus")
    finally:
        if load:
            load.finish()
            print(f"load: responses by status {load.statuses}")
        for p in reversed(processes):
            p.terminate()
        for p in processes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()

    if failures:
        print(f"\nFAIL: {len(failures)} problem(s); process logs in {work}/processes.log")
        for failure in failures:
            print("  - " + failure)
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)
    print("\nPrometheus end-to-end: every dashboard and alert expression returns data")


if __name__ == "__main__":
    main()

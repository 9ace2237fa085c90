"""Helpers of check.sh (standard library only).

  check.py rulefile RULES PROMETHEUSRULE OUT   same groups in both; writes the PrometheusRule's
                                               groups to OUT for `promtool check rules`
  check.py names METRICS_URL FILES...          every metric the dashboard and rules use is
                                               exported by the proxy (scraped) or listed external
  check.py panels PROM_URL DASHBOARD           every dashboard query returns data
  check.py alert PROM_URL ALERTNAME STATE      the alert reaches STATE (pending/firing)
  check.py rules-healthy PROM_URL              every loaded rule evaluates without error

Each prints PASS/FAIL/SKIP lines and exits with the number of failures.
"""
import json, re, sys, time, urllib.parse, urllib.request

# Series that come from cAdvisor (kubelet) and kube-state-metrics in a cluster, not from
# Vouchrs: they cannot exist in this local check.
EXTERNAL = {
    'container_cpu_usage_seconds_total': 'cAdvisor (kubelet)',
    'container_memory_working_set_bytes': 'cAdvisor (kubelet)',
    'kube_pod_container_resource_limits': 'kube-state-metrics',
}
KEYWORDS = {'and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring',
            'group_left', 'group_right', 'inf', 'nan'}
failures = 0


def report(ok, what, why=''):
    global failures
    failures += 0 if ok else 1
    print(f"{'PASS' if ok else 'FAIL'}: {what}{' -- ' + why if why else ''}")


def metric_names(expr):
    """Metric names in a PromQL expression (strings, matchers, ranges, groupings removed)."""
    e = re.sub(r'"(\\.|[^"\\])*"|\'(\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    e = re.sub(r'\{[^}]*\}', ' ', e)
    e = re.sub(r'\[[^\]]*\]', ' ', e)
    e = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', ' ', e)
    names = set()
    for m in re.finditer(r'(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?', e):
        if m.group(2) or m.group(1).lower() in KEYWORDS:
            continue
        names.add(m.group(1))
    return names


def dashboard_targets(path):
    for panel in json.load(open(path))['panels']:
        for target in panel.get('targets', []):
            yield panel['title'], target['refId'], target['expr']


def rule_exprs(path):
    # The rules file is YAML; its exprs are block scalars under `expr: |`. A tiny reader
    # suffices for the files we write (python3 here may lack PyYAML).
    lines = open(path).read().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r'^(\s*)expr: \|', lines[i])
        if m:
            indent, body = len(m.group(1)), []
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i].strip())
                i += 1
            yield ' '.join(body)
            continue
        m = re.match(r'^\s*expr: (.+)$', lines[i])
        if m:
            yield m.group(1)
        i += 1


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def query(prom, expr):
    body = json.loads(get(f"{prom}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"))
    if body.get('status') != 'success':
        raise RuntimeError(body)
    return body['data']['result']


def substitute(expr):
    """Dashboard variables as a viewer with every namespace/gateway/tier selected sees them."""
    for var, value in [('$__rate_interval', '30s'), ('$namespace', '.*'), ('$gateway', '.*'), ('$tier', '.*')]:
        expr = expr.replace(var, value)
    return expr


def cmd_rulefile(rules, prometheusrule, out):
    rule_list = list(rule_exprs(rules))
    pr_list = list(rule_exprs(prometheusrule))
    report(len(rule_list) > 0 and rule_list == pr_list, f'{prometheusrule} has the expressions of {rules}',
           f'{len(pr_list)} vs {len(rule_list)} rules' if rule_list != pr_list else '')
    # Un-indent spec: of the PrometheusRule into a plain rules file.
    text = open(prometheusrule).read().splitlines()
    start = next(i for i, l in enumerate(text) if l.startswith('spec:'))
    body = [l[2:] if l.startswith('  ') else l for l in text[start + 1:]]
    open(out, 'w').write('\n'.join(body) + '\n')


def cmd_names(metrics_url, files):
    exported = set()
    for line in get(metrics_url).splitlines():
        if line and not line.startswith('#'):
            exported.add(re.match(r'[a-zA-Z_:][\w:]*', line).group(0))
    used = {}
    for f in files:
        exprs = [e for _, _, e in dashboard_targets(f)] if f.endswith('.json') else list(rule_exprs(f))
        report(len(exprs) > 0, f'{f}: {len(exprs)} expressions found')
        for e in exprs:
            for n in metric_names(e):
                used.setdefault(n, set()).add(f.rsplit('/', 1)[-1])
    for name in sorted(used):
        where = ', '.join(sorted(used[name]))
        if name in exported:
            report(True, f'{name} ({where}) is exported by vouchrs-proxy')
        elif name in EXTERNAL:
            print(f'SKIP: {name} ({where}) comes from {EXTERNAL[name]}, not Vouchrs')
        else:
            report(False, f'{name} ({where}) is not exported by vouchrs-proxy')


def cmd_panels(prom, dashboard, wait=30):
    for title, ref, expr in dashboard_targets(dashboard):
        external = sorted(n for n in metric_names(expr) if n in EXTERNAL)
        if external:
            print(f"SKIP: panel '{title}' {ref}: needs {', '.join(f'{n} ({EXTERNAL[n]})' for n in external)}, which only a cluster has")
            continue
        q = substitute(expr)
        deadline, result, error = time.time() + wait, [], ''
        while time.time() < deadline:
            try:
                result, error = query(prom, q), ''
            except Exception as e:  # noqa: BLE001 -- reported below
                error = str(e)
            # Data, and not only NaN (0/0 while a counter has a single sample so far).
            if any(r['value'][1] not in ('NaN', '+Inf', '-Inf') for r in result):
                break
            time.sleep(1)
        sample = ', '.join(f"{r['metric']}={float(r['value'][1]):.4g}" for r in result[:3])
        finite = any(r['value'][1] not in ('NaN', '+Inf', '-Inf') for r in result)
        report(finite, f"panel '{title}' {ref} returns data", error or sample or 'empty result')


def cmd_alert(prom, name, state, wait=60):
    deadline, seen = time.time() + wait, []
    while time.time() < deadline:
        alerts = json.loads(get(f'{prom}/api/v1/alerts'))['data']['alerts']
        seen = [(a['labels'].get('alertname'), a['state'], a['labels']) for a in alerts]
        hit = [s for s in seen if s[0] == name and s[1] == state]
        if hit:
            report(True, f'{name} is {state}', json.dumps(hit[0][2], sort_keys=True))
            return
        time.sleep(1)
    report(False, f'{name} is {state}', f'alerts seen: {seen}')


def cmd_rules_healthy(prom):
    groups = json.loads(get(f'{prom}/api/v1/rules'))['data']['groups']
    rules = [r for g in groups for r in g['rules']]
    report(len(rules) > 0, f'Prometheus loaded {len(rules)} rules')
    for r in rules:
        report(r.get('health') == 'ok', f"rule {r['name']} evaluates", r.get('lastError', '') or r.get('health', ''))


if __name__ == '__main__':
    cmd, args = sys.argv[1], sys.argv[2:]
    {'rulefile': lambda: cmd_rulefile(*args), 'names': lambda: cmd_names(args[0], args[1:]),
     'panels': lambda: cmd_panels(*args), 'alert': lambda: cmd_alert(*args),
     'rules-healthy': lambda: cmd_rules_healthy(*args)}[cmd]()
    sys.exit(min(failures, 100))

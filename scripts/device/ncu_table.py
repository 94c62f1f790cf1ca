#!/usr/bin/env python3
"""ncu_table.py CSV: per-kernel time table of an `ncu --csv --metrics
gpu__time_duration.sum` log (gpu-check.sh stage kernels): kernels grouped by
name (template arguments kept, parameters cut), total and count, largest
first."""
import csv, sys, re, collections
rows = list(csv.reader(open(sys.argv[1])))
hdr = None
agg = collections.OrderedDict()
tot = 0.0; n = 0
for r in rows:
    if 'Kernel Name' in r and 'Metric Value' in r: hdr = r; continue
    if not hdr or len(r) != len(hdr): continue
    d = dict(zip(hdr, r))
    if d.get('Metric Name') != 'gpu__time_duration.sum': continue
    v = float(d['Metric Value'].replace(',', ''))
    unit = d.get('Metric Unit', 'nsecond')
    us = v / 1000 if unit.startswith('n') else v if unit.startswith('u') else v * 1000
    name = d['Kernel Name']
    name = re.sub(r'\(.*$', '', name)[:80]
    a = agg.setdefault(name, [0, 0.0]); a[0] += 1; a[1] += us
    tot += us; n += 1
print(f"{n} kernels, {tot:.1f} us of kernel time")
for k, (c, us) in sorted(agg.items(), key=lambda x: -x[1][1]):
    print(f"{us:9.1f} us {100*us/tot:5.1f}% {c:4d}x  {k}")

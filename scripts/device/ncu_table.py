#!/usr/bin/env python3
"""ncu_table.py CSV: per-kernel time table of an `ncu --csv --metrics
gpu__time_duration.sum[,dram__bytes_read.sum]` log (gpu-check.sh stage
kernels): kernels grouped by name (template arguments kept, parameters cut),
total time, count, and when the log has DRAM reads their bytes and the rate
they ran at (what to compare with the card's ~4.2 TB/s), largest first."""
import csv, sys, re, collections
rows = list(csv.reader(open(sys.argv[1])))
hdr = None
agg = collections.OrderedDict()
tot = 0.0; n = 0; tot_b = 0.0
for r in rows:
    if 'Kernel Name' in r and 'Metric Value' in r: hdr = r; continue
    if not hdr or len(r) != len(hdr): continue
    d = dict(zip(hdr, r))
    name = re.sub(r'\(.*$', '', d['Kernel Name'])[:64] + ('  grid ' + d['Grid Size'] if 'Grid Size' in d else '')
    a = agg.setdefault(name, [0, 0.0, 0.0])
    v = float(d['Metric Value'].replace(',', ''))
    unit = d.get('Metric Unit', '')
    if d.get('Metric Name') == 'gpu__time_duration.sum':
        us = v / 1000 if unit.startswith('n') else v if unit.startswith('u') else v * 1000
        a[0] += 1; a[1] += us; tot += us; n += 1
    elif d.get('Metric Name') == 'dram__bytes_read.sum':
        scale = {'byte': 1, 'Kbyte': 1e3, 'Mbyte': 1e6, 'Gbyte': 1e9, 'KB': 1e3, 'MB': 1e6, 'GB': 1e9}.get(unit, 1)
        a[2] += v * scale; tot_b += v * scale
print(f"{n} kernels, {tot:.1f} us of kernel time, {tot_b / 1e6:.1f} MB read from DRAM")
for k, (c, us, b) in sorted(agg.items(), key=lambda x: -x[1][1]):
    rate = f"{b / 1e6:8.2f} MB {b / us / 1e3 if us else 0:6.0f} GB/s" if tot_b else ""
    print(f"{us:9.1f} us {100*us/tot:5.1f}% {c:4d}x {rate}  {k}")

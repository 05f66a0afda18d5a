#!/usr/bin/env python3
# Which parts of the hero_proc binary a running daemon keeps resident, by crate:
#   python3 tests/bench/resident_by_crate.py PID /path/to/hero_proc
# Reads /proc/PID/pagemap over the mappings of the binary (root needed for the present
# bits) and attributes each resident code page to the symbol (`nm -n -C`) at its start.
import os, sys, subprocess, bisect, collections, re
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hot_symbols import PAGE, touched_pages
pid=int(sys.argv[1]); binpath=sys.argv[2]
present=sorted(touched_pages(pid, binpath).items())
print("resident pages in binary mappings:", len(present), "=", len(present)*4, "kB")
byperm=collections.Counter(p for _,p in present); print(byperm)
# symbols
out=subprocess.run(["nm","-n","-C","--defined-only",binpath],capture_output=True,text=True).stdout
syms=[]
for l in out.splitlines():
    p=l.split(' ',2)
    if len(p)==3:
        try: syms.append((int(p[0],16),p[2]))
        except: pass
addrs=[s[0] for s in syms]
def crate(name):
    m=re.match(r'(?:<)?(?:&)?(?:dyn )?([a-zA-Z_][a-zA-Z0-9_]*)::',name)
    return m.group(1) if m else name[:30]
cnt=collections.Counter()
for page,perm in present:
    if 'x' not in perm: cnt['[non-exec '+perm+']']+=1; continue
    va=page*PAGE
    # attribute page to symbols in it: take the symbol at page start
    i=bisect.bisect_right(addrs,va)-1
    c=crate(syms[i][1]) if i>=0 else '?'
    cnt[c]+=1
for c,n in cnt.most_common(40): print(f"{n*4:6d} kB {c}")

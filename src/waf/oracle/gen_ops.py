"""Generates operator cases, asks libmodsecurity 3.0.9 (./oracle) for the verdicts and prints
them in the format of src/waf/operators/modsecurity-3.0.9.tsv (operator, parameter, input:
%HH-escaped; verdict). Usage: python3 gen_ops.py [cases per operator] [seed]"""
import os, random, subprocess, sys
N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
rnd = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
B = lambda s: s.encode('latin-1')
def rs(alpha, lo, hi): return bytes(rnd.choice(alpha) for _ in range(rnd.randint(lo, hi)))
NUMS = [b"0", b"1", b"-1", b"5", b"10", b" 7", b"\t8", b"+3", b"-0", b"abc", b"2147483647", b"2147483648", b"-2147483649",
        b"99999999999999999999", b"-99999999999999999999", b"", b"0x10", b"1e3", b"12abc", b" ", b"--1", b"+-1", b"007", b"3\x004"]
cases = []
for op in ('eq', 'ge', 'gt', 'le', 'lt'):
    for _ in range(N):
        p = rnd.choice(NUMS) if rnd.random() < 0.7 else rs(B("0123456789 -+x"), 0, 4)
        i = rnd.choice(NUMS) if rnd.random() < 0.6 else rs(B("0123456789 -+ax\x00"), 0, 5)
        cases.append((op, p, i))
for op in ('streq', 'beginsWith', 'endsWith', 'contains', 'containsWord', 'within', 'strmatch'):
    for _ in range(N):
        cases.append((op, rs(B("ab _1-"), 1 if op in ('within',) else 0, 3), rs(B("ab _1-Z\x00"), 0, 7)))
for _ in range(N):
    p = rnd.choice([b"32-126", b"1-255", b"0", b"9,10,13,32-126", b"65-90, 97-122", b" 48-57", b"255", b"0-0,255-255", b"38,44-46,48-58,61,65-90,95,97-122"])
    cases.append(('validateByteRange', p, rs(bytes(range(256)), 0, 4)))
for _ in range(N):
    cases.append(('validateUrlEncoding', b"", rs(B("%%0aFgz+"), 0, 6)))
for _ in range(N):
    s = b''.join(rnd.choice([b"a", b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80",
                             b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xc3", b"\xe2\x82", b"\x80", b"\xff", b"\x00"]) for _ in range(rnd.randint(0, 4)))
    cases.append(('validateUtf8Encoding', b"", s))
NETS = [b"10.0.0.0/8,192.168.1.1", b"::1,fe80::/10", b"127.0.0.1", b"0.0.0.0/0", b"1.2.3.4/32,2001:db8::/32", b"192.168.0.0/16,::ffff:10.0.0.0/104"]
ADDRS = [b"10.1.2.3", b"192.168.1.1", b"192.168.1.2", b"::1", b"fe80::1", b"127.0.0.1", b"1.2.3.4", b"2001:db8::5", b"2001:db9::1",
         b"::ffff:10.0.0.1", b"10.0.0.1 ", b" 10.0.0.1", b"010.0.0.1", b"10.0.0", b"abc", b"", b"256.1.1.1", b"::", b"192.168.5.5"]
for _ in range(N):
    cases.append(('ipMatch', rnd.choice(NETS), rnd.choice(ADDRS)))
PMS = [b'"a b"', b'a|61 62|b', b'\\"x', b'a\\:b c', b'|ab cd|', b'  foo  ', b'"foo', b'x\\y', b'AB cd', b'|ff|', b'a"b', b'"" a']
PMS += [b'x\\;y', b'x|4a|y', b'a|61 62|b', b'"x y"z"']
for _ in range(4 * N):
    p = rnd.choice(PMS)
    if rnd.random() < 0.3:
        # The parameter itself or a piece of it, so the parser's leftovers show.
        i = p[rnd.randint(0, len(p)):][:rnd.randint(1, 6)] + rs(B('xy;'), 0, 2)
    else:
        i = rs(B('ab" :|xyfoAB\xab\xcd\xff\\;4'), 0, 6)
    cases.append(('pm', p, i))
inp = ''.join(f"O {o} {p.hex() or '-'} {i.hex() or '-'}\n" for o, p, i in cases)
out = subprocess.run([os.environ.get('ORACLE', './oracle')], input=inp.encode(), capture_output=True, check=True).stdout.decode().splitlines()
assert len(out) == len(cases)
esc = lambda b: ''.join(chr(x) if 0x21 <= x < 0x7f and x != 0x25 else '%%%02X' % x for x in b)
print("# Operator verdicts recorded from libmodsecurity 3.0.9: operator, parameter, input (%HH for bytes outside printable ASCII, space and %), verdict (1, 0, or E when it refuses the parameter).")
for (o, p, i), r in zip(cases, out):
    r = 'E' if r.startswith('E') or r.startswith('X') else r
    print(f"{o}\t{esc(p)}\t{esc(i)}\t{r}")

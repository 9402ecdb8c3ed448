"""Generates PCRE patterns combining the features the rewrite to the regex crate handles
(classes, escapes, quantifiers, anchors, flags, non-ASCII bytes) and inputs for them:
writes pats.txt and ins.txt (hex, one a line) for `rxbatch pats.txt ins.txt` and for
`cargo test --lib crs_regex_verdicts -- --ignored` with CONG_WAF_OP=rx,
CONG_WAF_PARAMS=pats.txt, CONG_WAF_RX_INPUTS=ins.txt. A sample of the agreeing rows is
src/waf/operators/pcre-generated.tsv."""
import random
rnd = random.Random(12)
ATOMS = ['a', 'b', 'x', '.', r'\d', r'\w', r'\s', r'\W', r'\S', r'\D', r'\b', r'\B', '^', '$', r'\A', r'\z', r'\Z',
         r'\x41', r'\x{62}', r'\x7', r'\n', r'\t', r'\r', r'\e', r'\cA', r'\012', r'\0', r'\/', r'\-', r'\<', r'\>', r'\.', r'\*',
         r'\h', r'\v', r'\R', r'\N', '{', '}', 'a{2}', 'a{,2}', 'a{1,}', r'\Qa.b\E', '\u00e9', '\xff'.encode('latin-1').decode('latin-1'),
         '[abc]', '[^abc]', '[a-c]', r'[\w-]', r'[\w-.]', '[-a]', '[a-]', '[]a]', '[^]a]', r'[\]]', '[[a]', '[[:alpha:]]', '[[:digit:]_]',
         r'[\d\s]', r'[\x00-\x1f]', r'[\x{80}-\x{ff}]', '[é]', '[&&]', '[~~]', '[a--]', r'[\b]', r'[\012]', r'[\h]', r'[\v]', '[.]', '[$^]', '[a-z-9]']
def gen(d=0):
    k = rnd.random()
    if d > 3 or k < 0.45:
        s = rnd.choice(ATOMS)
    elif k < 0.65:
        s = gen(d+1) + gen(d+1)
    elif k < 0.78:
        s = '(?:' + gen(d+1) + '|' + gen(d+1) + ')'
    elif k < 0.86:
        s = '(' + gen(d+1) + ')'
    else:
        s = '(?i)' + gen(d+1) if rnd.random() < 0.5 else '(?i:' + gen(d+1) + ')'
    if rnd.random() < 0.25 and not s.endswith(('*', '+', '?', '}')) and s not in ('^', '$', r'\b', r'\B', r'\A', r'\z', r'\Z'):
        s += rnd.choice(['*', '+', '?', '*?', '+?', '{0,2}', '{2}'])
    return s
pats = set()
while len(pats) < 4000:
    pats.add(gen())
pats = sorted(pats)
open('pats.txt', 'w').write(''.join(p.encode('utf-8').hex() + '\n' for p in pats))
ins = set([b'', b'\n', b'a\n', b'\na', b'a\nb\n'])
alpha = [b'a', b'b', b'x', b'A', b'B', b'1', b' ', b'\t', b'\n', b'\r', b'\x0b', b'\x0c', b'\x00', b'\x1b', b'\x01', b'.', b'-', b'_', b'/', b'<', b'>', b'[', b']', b'{', b'}', b'\\', b'\xc3\xa9', b'\xe9', b'\xff', b'\x85', b'\xa0', b'\x80', b'&', b'~', b'$', b'^', b'*', b'e']
while len(ins) < 400:
    ins.add(b''.join(rnd.choice(alpha) for _ in range(rnd.randint(0, 8))))
open('ins.txt', 'w').write(''.join((s.hex() or '-') + '\n' for s in sorted(ins)))

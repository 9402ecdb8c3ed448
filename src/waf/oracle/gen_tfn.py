"""Generates transformation inputs, asks libmodsecurity 3.0.9 (./oracle, see oracle.cc) for the
outputs and prints them in the format of src/waf/transforms/modsecurity-3.0.9.tsv.

Usage: python3 gen_tfn.py [cases per transformation] [max length] [seed] > cases.tsv
Set ORACLE to the oracle binary (default ./oracle)."""
import os, random, subprocess, sys
N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
MAXLEN = int(sys.argv[2]) if len(sys.argv) > 2 else 16
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
rnd = random.Random(seed)
B = lambda s: s.encode('latin-1')
HEX = "0123456789abcdefABCDEF"
ALPHA = {
 'urlDecode': B("%+uU" + HEX + "gz \x00\xff"),
 'urlDecodeUni': B("%%%+uUuU" + HEX + "ffFF00gz \x00\xff"),
 'htmlEntityDecode': B("&&&##xX;;" + "0123456789abcdefABCDEF" + "quotampltgnbsAQZ \x00\xff"),
 'jsDecode': B("\\\\\\uxUX" + HEX + "01234567fF ntrvabf'\"?\n\x00\t\xff"),
 'cssDecode': B("\\\\\\" + HEX + "fF00 \n\t\x0bgzx\x00\xff"),
 'escapeSeqDecode': B("\\\\\\xX" + HEX + "01234567 ntrvabf'\"?\n\x00\xff"),
 'cmd_line': B("\"'\\^ \t\n\r,;/(ABCabcz\x0b\x0c\x00\xff"),
 'compressWhitespace': B(" \t\n\r\x0b\x0c\xa0a\x00\xff"),
 'removeWhitespace': B(" \t\n\r\x0b\x0c\xa0a\x00\xff\xc2"),
 'replaceComments': B("/*/**-#<!>-\n\r a\x00"),
 'removeComments': B("/*/**--#<!>-\n\r a\x00"),
 'removeCommentsChar': B("/*/**--#<!>-\n\r a\x00"),
 'normalisePath': B("/./..\\a\x00:"),
 'normalisePathWin': B("/./..\\\\a\x00:"),
 'normalizePath': B("/./..\\a"),
 'base64Decode': B("ABCDEFxyz0189+/=-_ .\n\x00!\xff"),
 'base64DecodeExt': B("ABCDEFxyz0189+/=-_ .\n\x00!\xff"),
 'hexDecode': B(HEX + "xXg \x00\xff"),
 'sqlHexDecode': B("0000xXxX" + HEX + "g '\x00"),
 'trim': B(" \t\n\r\x0b\x0c\xa0a\x00"),
 'trimLeft': B(" \t\n\r\x0b\x0c\xa0a\x00"),
 'trimRight': B(" \t\n\r\x0b\x0c\xa0a\x00"),
 'removeNulls': B("\x00\x00ab \xff"),
 'replaceNulls': B("\x00\x00ab \xff"),
}
RANDOM = ['lowercase','uppercase','md5','sha1','length','parityEven7bit','parityOdd7bit','parityZero7bit',
          'base64Encode','hexEncode','urlEncode']
def rand_utf8():
    out = bytearray()
    for _ in range(rnd.randint(0, MAXLEN // 2)):
        k = rnd.random()
        if k < 0.3: out += bytes([rnd.randint(0x20, 0x7e)])
        elif k < 0.7:
            cp = rnd.choice([rnd.randint(0x80, 0x7ff), rnd.randint(0x800, 0xffff), rnd.randint(0x10000, 0x10ffff)])
            if 0xd800 <= cp <= 0xdfff: cp = 0xe9
            out += chr(cp).encode('utf-8')
        elif k < 0.8: out += bytes([rnd.randint(0x80, 0xff)])
        elif k < 0.9:  # truncated / overlong
            out += rnd.choice([b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80"])
        else: out += b"%u00e9\x00"
    return bytes(out)
cases = []
for name, alpha in ALPHA.items():
    for _ in range(N):
        n = rnd.randint(0, MAXLEN)
        cases.append(('T', name, bytes(rnd.choice(alpha) for _ in range(n))))
for name in RANDOM:
    for _ in range(N // 4):
        n = rnd.randint(0, MAXLEN)
        cases.append(('T', name, bytes(rnd.randint(0, 255) for _ in range(n))))
for _ in range(N):
    cases.append(('T', 'utf8toUnicode', rand_utf8()))
for _ in range(N):
    n = rnd.randint(0, MAXLEN)
    alpha = B("%%uU" + HEX + "fF0 ")
    s = bytes(rnd.choice(alpha) for _ in range(n))
    # realistic %uHHHH codes too
    if rnd.random() < 0.5:
        s += b"%%u%04x" % rnd.choice([rnd.randint(0, 0xffff), rnd.randint(0xff00, 0xff7f), rnd.randint(0x80, 0x2ff), rnd.randint(0x2000, 0x2130), 0x3002, 0xff61])
    cases.append(('U', 'urlDecodeUni', s))
inp = "".join(f"{k} {n} {(s.hex() or '-')}\n" for k, n, s in cases)
out = subprocess.run([os.environ.get('ORACLE', './oracle')], input=inp.encode(), capture_output=True, check=True).stdout.decode().splitlines()
assert len(out) == len(cases), (len(out), len(cases))
print("# Transformation outputs recorded from libmodsecurity 3.0.9 (Debian 3.0.9-1+deb12u2): name, input hex, output hex.")
for (k, n, s), o in zip(cases, out):
    name = 'cmdLine' if n == 'cmd_line' else n
    if k == 'U': name = 'urlDecodeUni:20127'
    print(f"{name}\t{s.hex() or '-'}\t{o}")

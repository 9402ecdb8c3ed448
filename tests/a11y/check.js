// Loads a page in the system Chromium, runs axe-core on it and prints the violations as JSON.
// Usage: node check.js URL SCREENSHOT.png [HOST-HEADER]
// Exit 0 when no violation is serious or critical, 1 otherwise, 2 on error.
const { chromium } = require('playwright-core');
const fs = require('fs');

async function main() {
  const [url, shot, host] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({
      extraHTTPHeaders: host ? { Host: host } : {},
      viewport: { width: 390, height: 844 }, // a phone
    });
    const page = await context.newPage();
    const resp = await page.goto(url, { waitUntil: 'load', timeout: 20000 });
    await page.addScriptTag({ content: fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8') });
    const result = await page.evaluate(async () =>
      await axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] }));
    if (shot) await page.screenshot({ path: shot, fullPage: true });
    const violations = result.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length }));
    const serious = violations.filter(v => v.impact === 'serious' || v.impact === 'critical');
    console.log(JSON.stringify({ status: resp.status(), lang: await page.getAttribute('html', 'lang'), violations, serious: serious.length, passes: result.passes.length }));
    process.exitCode = serious.length ? 1 : 0;
  } finally {
    await browser.close();
  }
}
main().catch(e => { console.error(e); process.exitCode = 2; });

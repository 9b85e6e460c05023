// Open built chapters in a real browser (Debian's headless Chromium, driven by playwright-core)
// and assert what a reader must see: KaTeX-rendered math, no raw TeX delimiters, and figures
// that actually loaded. Leaves a screenshot of each checked page under the output directory.
//
//   node book/check.mjs <html-dir> <page.html> [<page.html> ...]

import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const [htmlDir, ...pages] = process.argv.slice(2);
if (!htmlDir || pages.length === 0) {
  console.error('usage: node book/check.mjs <html-dir> <page.html> [...]');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
if (!fs.existsSync(executablePath)) {
  console.error(`book-check: no browser at ${executablePath} (apt-get install chromium, or set CHROMIUM)`);
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const failures = [];
try {
  for (const page of pages) {
    const file = path.resolve(htmlDir, page);
    const tab = await browser.newPage({ viewport: { width: 1280, height: 1600 } });
    await tab.goto(pathToFileURL(file).href, { waitUntil: 'load' });
    const seen = await tab.evaluate(() => {
      const text = document.querySelector('main').innerText;
      const images = [...document.querySelectorAll('figure.output img')];
      return {
        katex: document.querySelectorAll('.katex').length,
        displayMath: document.querySelectorAll('.katex-display').length,
        rawDisplayTex: text.includes('$$'),
        figures: images.length,
        loadedFigures: images.filter((img) => img.complete && img.naturalWidth > 0).length,
        katexFontLoaded: document.fonts.check('16px KaTeX_Main'),
      };
    });
    const shot = path.join(htmlDir, '..', `screenshot-${path.basename(page, '.html')}.png`);
    await tab.screenshot({ path: shot, fullPage: false });
    const problems = [];
    if (seen.katex === 0) problems.push('no KaTeX-rendered math');
    if (seen.rawDisplayTex) problems.push('raw $$ in the page text');
    if (seen.loadedFigures === 0) problems.push(`no figure loaded (${seen.figures} <img> found)`);
    if (!seen.katexFontLoaded) problems.push('KaTeX fonts did not load');
    console.log(`${page}: ${JSON.stringify(seen)} -> ${problems.length ? 'FAIL' : 'ok'} (screenshot ${shot})`);
    if (problems.length) failures.push(`${page}: ${problems.join('; ')}`);
    await tab.close();
  }
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(`book-check failed:\n  ${failures.join('\n  ')}`);
  process.exit(1);
}

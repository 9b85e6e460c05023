// Open the built book in a real browser (Debian's headless Chromium, driven by playwright-core)
// and assert what a reader must see.
//
// Every page of <html-dir> (each *.html there) must have rendered content, and every link on it
// that stays inside the book (a cross-reference, a {doc} role, a markdown link to another file)
// must hold: the target file exists and, for a link with a #fragment, the target page has an
// element with that id. The notebook chapters named on the command line must in addition show
// KaTeX-rendered math, no raw TeX delimiters and figures that actually loaded; the reference
// pages named after --reference have no math or figures, so they are only checked to exist and
// to hold their entries. Leaves a screenshot of each named page beside <html-dir>.
//
//   node book/check.mjs <html-dir> [<chapter.html> ...] [--reference <page.html> ...]
//   node book/check.mjs --links-only <html-dir>     # only: every page renders, every link holds
//
// Exits 1 listing each problem (`page -> link: why`), 2 on a usage error.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

function parseArgs(argv) {
  const linksOnly = argv[0] === '--links-only';
  const args = linksOnly ? argv.slice(1) : argv;
  const [htmlDir, ...rest] = args;
  const split = rest.indexOf('--reference');
  const chapters = split < 0 ? rest : rest.slice(0, split);
  const reference = split < 0 ? [] : rest.slice(split + 1);
  const usage = linksOnly ? !htmlDir || rest.length > 0 : !htmlDir || chapters.length + reference.length === 0;
  if (usage) {
    console.error('usage: node book/check.mjs <html-dir> [<chapter.html> ...] [--reference <page.html> ...]\n'
      + '       node book/check.mjs --links-only <html-dir>');
    process.exit(2);
  }
  return { linksOnly, htmlDir: path.resolve(htmlDir), chapters, reference };
}

const { linksOnly, htmlDir, chapters, reference } = parseArgs(process.argv.slice(2));
if (!fs.existsSync(htmlDir)) {
  console.error(`book-check: no such directory ${htmlDir}`);
  process.exit(2);
}
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
if (!fs.existsSync(executablePath)) {
  console.error(`book-check: no browser at ${executablePath} (apt-get install chromium, or set CHROMIUM)`);
  process.exit(2);
}

const allPages = fs.readdirSync(htmlDir).filter((f) => f.endsWith('.html')).sort();
const failures = [];
for (const page of [...chapters, ...reference]) {
  if (!fs.existsSync(path.join(htmlDir, page))) failures.push(`${page}: not built`);
}

// Where an href found on `page` points, or null when it leaves the book on purpose (http:, mailto:).
// `href` is the browser's resolved URL (a.href), so relative links are already absolute file: URLs.
function internalTarget(href) {
  const url = new URL(href);
  if (url.protocol !== 'file:') return null;
  return { file: fileURLToPath(url), fragment: decodeURIComponent(url.hash.replace(/^#/, '')) };
}

const browser = await chromium.launch({
  executablePath,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

// Each page is opened once: what it shows, its links and the ids a link may land on.
const opened = new Map();
async function open(file, { screenshot = false } = {}) {
  if (opened.has(file) && !screenshot) return opened.get(file);
  const tab = await browser.newPage({ viewport: { width: 1280, height: 1600 } });
  await tab.goto(pathToFileURL(file).href, { waitUntil: 'load' });
  const seen = await tab.evaluate(() => {
    const main = document.querySelector('main');
    const text = main?.innerText ?? '';
    const images = [...document.querySelectorAll('figure.output img')];
    return {
      textLength: text.trim().length,
      katex: document.querySelectorAll('.katex').length,
      displayMath: document.querySelectorAll('.katex-display').length,
      rawDisplayTex: text.includes('$$'),
      figures: images.length,
      loadedFigures: images.filter((img) => img.complete && img.naturalWidth > 0).length,
      katexFontLoaded: document.fonts.check('16px KaTeX_Main'),
      entries: main ? main.querySelectorAll('h2[id], h3[id], a.xref').length : 0,
      links: [...document.querySelectorAll('a[href]')].map((a) => ({ raw: a.getAttribute('href'), href: a.href })),
      ids: [...document.querySelectorAll('[id]')].map((e) => e.id)
        .concat([...document.querySelectorAll('a[name]')].map((a) => a.name)),
    };
  });
  if (screenshot) {
    const shot = path.join(htmlDir, '..', `screenshot-${path.basename(file, '.html')}.png`);
    await tab.screenshot({ path: shot, fullPage: false });
    seen.screenshot = shot;
  }
  await tab.close();
  const result = { ...seen, ids: new Set(seen.ids) };
  opened.set(file, result);
  return result;
}

// A link holds when its file is a page (or asset) of the book and its #fragment an id there.
async function brokenLink(from, link) {
  const target = internalTarget(link.href);
  if (!target) return null;
  const relative = path.relative(htmlDir, target.file);
  if (relative.startsWith('..') || path.isAbsolute(relative)) return 'points outside the book';
  if (!fs.existsSync(target.file) || !fs.statSync(target.file).isFile()) return `no file ${relative}`;
  if (!target.fragment) return null;
  if (!target.file.endsWith('.html')) return null;
  const ids = target.file === from ? opened.get(from).ids : (await open(target.file)).ids;
  return ids.has(target.fragment) ? null : `no element with id "${target.fragment}" in ${relative}`;
}

const summary = (seen) => {
  const { links, ids, screenshot, ...rest } = seen;
  return JSON.stringify({ ...rest, links: links.length });
};

try {
  for (const page of allPages) {
    const file = path.join(htmlDir, page);
    const isChapter = chapters.includes(page);
    const isReference = reference.includes(page);
    const seen = await open(file, { screenshot: isChapter || isReference });
    const problems = [];
    if (seen.textLength === 0) problems.push('no rendered content');
    if (isChapter && !linksOnly) {
      if (seen.katex === 0) problems.push('no KaTeX-rendered math');
      if (seen.rawDisplayTex) problems.push('raw $$ in the page text');
      if (seen.loadedFigures === 0) problems.push(`no figure loaded (${seen.figures} <img> found)`);
      if (!seen.katexFontLoaded) problems.push('KaTeX fonts did not load');
    }
    if (isReference && seen.entries === 0) problems.push('no entries (an h2/h3 with an id) and no cross-references');
    let checked = 0;
    for (const link of seen.links) {
      const why = await brokenLink(file, link);
      if (internalTarget(link.href)) checked += 1;
      if (why) problems.push(`${page} -> ${link.raw}: ${why}`);
    }
    const shot = seen.screenshot ? ` (screenshot ${seen.screenshot})` : '';
    const kind = isChapter ? 'chapter' : isReference ? 'reference' : 'page';
    console.log(`${page} [${kind}]: ${summary(seen)}, ${checked} internal links -> ${problems.length ? 'FAIL' : 'ok'}${shot}`);
    for (const problem of problems) failures.push(problem.startsWith(`${page} -> `) ? problem : `${page}: ${problem}`);
  }
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(`book-check failed (${failures.length}):\n  ${failures.join('\n  ')}`);
  process.exit(1);
}
console.log(`book-check: ${allPages.length} pages, every internal link holds`);

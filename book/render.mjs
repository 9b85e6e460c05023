// Render mystmd's site JSON (`myst build --site`) into a static, offline HTML book.
//
// mystmd's own HTML theme is fetched from the internet at build time; this machine and CI have
// none. The site JSON already carries KaTeX-rendered math (`node.html`) and extracted figures
// (`public/*.png`), so this script only needs mdast -> hast (myst-to-html), a page shell with a
// table of contents, and KaTeX's CSS and fonts from node_modules.
//
//   node book/render.mjs <site-dir> <out-dir>

import fs from 'node:fs';
import path from 'node:path';
import { all } from 'mdast-util-to-hast';
import { mystToHast } from 'myst-to-html';
import rehypeStringify from 'rehype-stringify';
import { unified } from 'unified';
import { u } from 'unist-builder';

const [siteDir, outDir] = process.argv.slice(2);
if (!siteDir || !outDir) {
  console.error('usage: node book/render.mjs <site-dir> <out-dir>');
  process.exit(2);
}

const raw = (html) => u('raw', html);
const pageHref = (slug) => `${slug}.html`;

// Display math carries its equation number and anchor so {eq} references land on it.
function math(h, node) {
  const number = node.enumerator ? `<span class="eq-number">(${node.enumerator})</span>` : '';
  const id = node.html_id || node.identifier || undefined;
  return h(node, 'div', { class: 'math-display', id }, [raw((node.html ?? node.value) + number)]);
}

function inlineMath(h, node) {
  return h(node, 'span', { class: 'math-inline' }, [raw(node.html ?? node.value)]);
}

// A Jupyter output: figures as <img>, HTML as-is, text and errors as <pre>.
function output(h, node) {
  const data = node.jupyter_data ?? {};
  if (data.output_type === 'stream') {
    return h(node, 'pre', { class: `output stream ${data.name}` }, [u('text', data.text ?? '')]);
  }
  if (data.output_type === 'error') {
    const text = `${data.ename}: ${data.evalue}`;
    return h(node, 'pre', { class: 'output error' }, [u('text', text)]);
  }
  const bundle = data.data ?? {};
  for (const mime of ['image/png', 'image/jpeg', 'image/svg+xml']) {
    if (bundle[mime]?.path) {
      const src = `public${bundle[mime].path}`;
      return h(node, 'figure', { class: 'output image' }, [h(node, 'img', { src, alt: 'output figure' })]);
    }
  }
  if (bundle['text/html']?.content) {
    return h(node, 'div', { class: 'output html' }, [raw(bundle['text/html'].content)]);
  }
  const text = bundle['text/plain']?.content ?? '';
  return h(node, 'pre', { class: 'output text' }, [u('text', text)]);
}

// mystmd addresses pages site-absolutely (`/slug`, `/slug#id`), as a web server would serve them;
// opened from disk, `/slug` is the file system's root. Every page is written as `<slug>.html` beside
// the others (the index page as `index.html`), so a relative `slug.html#id` holds everywhere.
function internalHref(url) {
  const found = /^\/([^?#]*)(\?[^#]*)?(#.*)?$/.exec(url);
  if (!found || url.startsWith('//')) return url;
  const target = decodeURIComponent(found[1]).replace(/\/$/, '');
  const hash = found[3] ?? '';
  // A static file mystmd copied into the site's public folder (a download, an image).
  if (target && fs.existsSync(path.join(siteDir, 'public', target))) return `public/${target}${hash}`;
  const slug = !target || target === project.index ? 'index' : target;
  return pageHref(slug) + hash;
}

// `{doc}` roles and markdown links to other files arrive as internal links (`/slug`).
function link(h, node) {
  const internal = node.internal || (node.url?.startsWith('/') && !node.url.startsWith('//'));
  const href = internal ? internalHref(node.url) : node.url;
  return h(node, 'a', { href, title: node.title || undefined }, all(h, node));
}

// `{ref}`, `{eq}`, `[](#label)`: an anchor on this page, or `page.html#anchor` on another one.
function crossReference(h, node) {
  const id = node.html_id || node.identifier;
  const anchor = id ? `#${id}` : '';
  const href = node.url ? internalHref(node.url.replace(/#.*$/, '')) + anchor : anchor || '#';
  return h(node, 'a', { href, class: 'xref' }, all(h, node));
}

// A lab's {exercise} carries its label as the id that "Solution to Exercise N" links to; a
// {solution} with `:class: dropdown` folds away behind its title.
function exercise(h, node) {
  const title = `Exercise${node.enumerator ? `\u00a0${node.enumerator}` : ''}`;
  const heading = h(node, 'p', { class: 'admonition-title' }, [u('text', title)]);
  return h(node, 'div', { class: 'exercise', id: node.html_id || undefined }, [heading, ...all(h, node)]);
}

function solution(h, node) {
  const [first, ...rest] = node.children ?? [];
  const titled = first?.type === 'admonitionTitle';
  const title = titled ? all(h, first) : [u('text', 'Solution')];
  const body = all(h, { ...node, children: titled ? rest : node.children ?? [] });
  if (String(node.class ?? '').split(/\s+/).includes('dropdown')) {
    return h(node, 'details', { class: 'solution' }, [h(node, 'summary', title), ...body]);
  }
  return h(node, 'div', { class: 'solution' }, [h(node, 'p', { class: 'admonition-title' }, title), ...body]);
}

// mystmd rewrites simple math such as 10^{-13} into a span of text and superscripts.
const span = (h, node) => h(node, 'span', all(h, node));

// Citations link to the page's reference list (see `references` below).
function cite(h, node) {
  return h(node, 'a', { href: `#ref-${node.label}`, class: 'cite' }, all(h, node));
}

function citeGroup(h, node) {
  const parts = all(h, node).flatMap((child, i) => (i ? [u('text', '; '), child] : [child]));
  const wrap = node.kind === 'parenthetical';
  return h(node, 'span', { class: 'cite-group' }, [
    ...(wrap ? [u('text', '(')] : []),
    ...parts,
    ...(wrap ? [u('text', ')')] : []),
  ]);
}

function references(json) {
  const cites = json.references?.cite;
  if (!cites?.order?.length) return '';
  const items = cites.order
    .map((label) => `<li id="ref-${label}">${cites.data[label].html}</li>`)
    .join('');
  return `<section class="references"><h2>References</h2><ol>${items}</ol></section>`;
}

function render(mdast) {
  const pipe = unified()
    .use(mystToHast, {
      allowDangerousHtml: true,
      handlers: { math, inlineMath, output, link, crossReference, exercise, solution, span, cite, citeGroup },
    })
    .use(rehypeStringify, { allowDangerousHtml: true });
  return pipe.stringify(pipe.runSync(mdast));
}

const escape = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);

function shell({ title, body, nav, bookTitle }) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(title)} · ${escape(bookTitle)}</title>
<link rel="stylesheet" href="katex/katex.min.css">
<link rel="stylesheet" href="book.css">
</head>
<body>
<nav class="toc"><p class="book-title"><a href="index.html">${escape(bookTitle)}</a></p><ol>${nav}</ol></nav>
<main><article>
<h1 class="page-title">${escape(title)}</h1>
${body}
</article></main>
</body>
</html>
`;
}

const config = JSON.parse(fs.readFileSync(path.join(siteDir, 'config.json'), 'utf8'));
const project = config.projects[0];
const pages = [{ slug: project.index, title: null }, ...project.pages.filter((p) => p.slug)];

fs.mkdirSync(outDir, { recursive: true });
const contents = pages.map((page) => {
  const json = JSON.parse(fs.readFileSync(path.join(siteDir, 'content', `${page.slug}.json`), 'utf8'));
  return { slug: page.slug, title: page.title ?? json.frontmatter?.title ?? page.slug, json };
});
const nav = contents
  .map((p) => `<li><a href="${pageHref(p.slug === project.index ? 'index' : p.slug)}">${escape(p.title)}</a></li>`)
  .join('');

for (const page of contents) {
  const file = page.slug === project.index ? 'index' : page.slug;
  const body = render(page.json.mdast) + references(page.json);
  const html = shell({ title: page.title, body, nav, bookTitle: project.title });
  fs.writeFileSync(path.join(outDir, pageHref(file)), html);
}

// Figures, KaTeX's stylesheet and fonts, the book's stylesheet.
fs.cpSync(path.join(siteDir, 'public'), path.join(outDir, 'public'), { recursive: true });
const katexDist = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'node_modules', 'katex', 'dist');
fs.mkdirSync(path.join(outDir, 'katex'), { recursive: true });
fs.copyFileSync(path.join(katexDist, 'katex.min.css'), path.join(outDir, 'katex', 'katex.min.css'));
fs.cpSync(path.join(katexDist, 'fonts'), path.join(outDir, 'katex', 'fonts'), { recursive: true });
fs.copyFileSync(path.join(path.dirname(new URL(import.meta.url).pathname), 'book.css'), path.join(outDir, 'book.css'));
console.log(`rendered ${contents.length} pages into ${outDir}`);

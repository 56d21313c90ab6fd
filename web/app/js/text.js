// Turns a message body into DOM nodes. This is the one place message text meets the page, so
// it only ever creates text nodes and, for http(s) URLs, <a> elements whose href was checked
// with the URL parser. Markup, `javascript:` links and bidi overrides stay inert text.

// Bidi controls end a URL, so an override can't be smuggled into a link's text.
const URL_RE = /\bhttps?:\/\/[^\s<>"'`\u200e\u200f\u202a-\u202e\u2066-\u2069]+/gi;
const TRAILING = '.,;:!?\'")]}>';

/** Trims punctuation that usually ends a sentence rather than a URL, keeping balanced ")". */
function trimUrl(raw) {
  let url = raw;
  while (url.length > 0 && TRAILING.includes(url[url.length - 1])) {
    // Keep a closing parenthesis that closes one opened inside the URL (wiki links).
    if (url.endsWith(')') && count(url, '(') >= count(url, ')')) break;
    url = url.slice(0, -1);
  }
  return url;
}

/** Whether `s` parses as an absolute http: or https: URL. */
export function isWebUrl(s) {
  try {
    const u = new URL(s);
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
}

function count(s, ch) {
  let n = 0;
  for (const c of s) if (c === ch) n += 1;
  return n;
}

/** A safe external link, or null when `text` is not an http(s) URL. */
export function safeLink(text) {
  if (!isWebUrl(text)) return null;
  const a = document.createElement('a');
  a.href = new URL(text).href;
  a.textContent = text;
  a.rel = 'noopener noreferrer nofollow';
  a.target = '_blank';
  return a;
}

/** A fragment holding `body` as text, with http(s) URLs as links. */
export function renderBody(body) {
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const match of body.matchAll(URL_RE)) {
    const url = trimUrl(match[0]);
    const link = safeLink(url);
    if (!link) continue;
    if (match.index > last) frag.append(document.createTextNode(body.slice(last, match.index)));
    frag.append(link);
    last = match.index + url.length;
  }
  if (last < body.length) frag.append(document.createTextNode(body.slice(last)));
  return frag;
}

/** Length in Unicode scalar values, as the server counts it. */
export function scalarLength(s) {
  let n = 0;
  for (const _ of s) n += 1;
  return n;
}

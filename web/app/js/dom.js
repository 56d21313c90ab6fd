// Small DOM helpers. They exist so that every view builds elements the same safe way: text
// always goes in through textContent or text nodes, never through an HTML string, so nothing a
// user typed can ever become markup.

/**
 * Creates an element. `props` may hold:
 * - `class`: a class string; `text`: textContent; `dataset`: data-* values;
 * - `on`: an object of event listeners;
 * - anything else: set as an attribute (`true` = present, `false`/null = absent).
 * Children are nodes or strings (strings become text nodes).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'on') for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
    else if (key === 'innerHTML' || key.startsWith('on')) throw new Error(`refusing to set ${key}`);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/** Appends nodes and strings (as text) to `parent`, skipping null/false. */
export function append(parent, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return parent;
}

/** `document.querySelector` that throws when the element is missing (a bug in index.html). */
export function $(selector, root = document) {
  const el = root.querySelector(selector);
  if (!el) throw new Error(`missing element ${selector}`);
  return el;
}

/** Shows or hides an element with the `hidden` attribute. */
export function show(el, visible) {
  el.hidden = !visible;
}

/**
 * Building the page from data without ever parsing markup: elements are made with
 * `createElement`, text becomes text nodes, and attributes come from a short list. Nothing here
 * assigns `innerHTML` (the page's Trusted Types policy would refuse it anyway).
 */

export type Child = Node | string | number | null | undefined | false | readonly Child[];

type Handler<E extends Event> = (event: E) => void;

export interface Props {
  class?: string;
  id?: string;
  /** Internal links only: a path on this origin. */
  href?: string;
  type?: string;
  name?: string;
  value?: string;
  for?: string;
  title?: string;
  dir?: 'ltr' | 'rtl' | 'auto';
  role?: string;
  placeholder?: string;
  required?: boolean;
  disabled?: boolean;
  checked?: boolean;
  'aria-label'?: string;
  'aria-current'?: string;
  'data-testid'?: string;
  'data-request-id'?: string;
  onclick?: Handler<MouseEvent>;
  onsubmit?: Handler<SubmitEvent>;
}

const BOOLEAN_PROPS = new Set(['required', 'disabled', 'checked']);

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props: Props = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const element: HTMLElement = document.createElement(tag);
  for (const [name, value] of Object.entries(props) as [keyof Props, unknown][]) {
    if (value === undefined || value === false) continue;
    if (name === 'onclick') element.addEventListener('click', value as Handler<MouseEvent>);
    else if (name === 'onsubmit') element.addEventListener('submit', value as Handler<SubmitEvent>);
    else if (name === 'href') element.setAttribute('href', internalHref(String(value)));
    else if (BOOLEAN_PROPS.has(name)) element.setAttribute(name, '');
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element as HTMLElementTagNameMap[K];
}

function append(parent: Node, children: readonly Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (child instanceof Node) parent.appendChild(child);
    else parent.appendChild(document.createTextNode(String(child)));
  }
}

/** Links never leave the console: anything but a path on this origin becomes the console's home. */
function internalHref(href: string): string {
  return /^\/console(\/[A-Za-z0-9._~%/?=&-]*)?$/.test(href) ? href : '/console';
}

/** Replaces an element's content. */
export function show(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, children);
}

// What does not show, as the broker defines it (src/shared/invisible.ts, which this bundle cannot
// import): white space other than a space, a tab or a newline, default-ignorable characters
// (zero-width joiners, variation selectors, the Hangul fillers), format characters (bidi
// overrides and isolates, soft hyphens, tags), control characters, and the blank fillers.
const INVISIBLE = /(?![ \t\n])[\p{White_Space}\p{Default_Ignorable_Code_Point}\p{Cf}\p{Cc}\u115F\u1160\u3164\uFFA0\u2800\u{16FE4}\u{1D159}]/gu;

/**
 * A value from a request (a justification, a task id, a subject, a claim): shown as text, in an
 * isolated run so no character inside can reorder the page around it, with every control or
 * invisible format character (a right-to-left override, say) drawn as a visible marker instead
 * of acting on the text after it.
 */
export function untrusted(value: unknown): HTMLElement {
  const text = typeof value === 'string' ? value : JSON.stringify(value) ?? '';
  const element = h('bdi', { class: 'value' });
  let last = 0;
  for (const match of text.matchAll(INVISIBLE)) {
    const char = match[0];
    const at = match.index ?? 0;
    element.appendChild(document.createTextNode(text.slice(last, at)));
    element.appendChild(h('span', { class: 'escape', title: 'an invisible character' }, `U+${(char.codePointAt(0) as number).toString(16).toUpperCase().padStart(4, '0')}`));
    last = at + char.length;
  }
  element.appendChild(document.createTextNode(text.slice(last)));
  return element;
}

const relative = new Intl.RelativeTimeFormat('en', { numeric: 'auto' });

/** "in 54 minutes", "3 hours ago". */
export function fromNow(iso: string, now = Date.now()): string {
  const seconds = Math.round((Date.parse(iso) - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 60) return relative.format(seconds, 'second');
  if (abs < 3600) return relative.format(Math.round(seconds / 60), 'minute');
  if (abs < 86400) return relative.format(Math.round(seconds / 3600), 'hour');
  return relative.format(Math.round(seconds / 86400), 'day');
}

/** "10 min", "1 h 30 min", "45 s". */
export function lifetime(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return [h ? `${h} h` : '', m ? `${m} min` : '', s ? `${s} s` : ''].filter(Boolean).join(' ') || '0 s';
}

/** A time as the reader's clock says it, with the ISO form on hover. */
export function time(iso: string): HTMLElement {
  return h('time', { title: iso }, new Date(iso).toLocaleString());
}

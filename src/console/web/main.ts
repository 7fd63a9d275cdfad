import { SignedOut } from './api.js';
import { beginSignIn, completeSignIn, currentSession, forget, type ConsoleDocument } from './auth.js';
import { h, show, untrusted } from './dom.js';
import { auditView, breakGlassView, decideView, follow, mineView, requestView, type ViewContext } from './views.js';

/**
 * The console's entry: reads where to sign in, completes or starts the sign-in, and draws the
 * view the path names. Moving between views never reloads the page, which holds the ID token.
 */

const root = document.getElementById('app') as HTMLElement;
const nav = document.getElementById('nav') as HTMLElement;
const who = document.getElementById('who') as HTMLElement;

const NAV: [path: string, label: string][] = [
  ['/console', 'Decide'],
  ['/console/mine', 'My requests'],
  ['/console/break-glass', 'Break-glass'],
  ['/console/audit', 'Audit'],
];

let config: ConsoleDocument | undefined;

const ctx: ViewContext = {
  root,
  go(path) {
    history.pushState(null, '', path);
    void render();
  },
  signedOut: (why) => signInAgain(location.pathname.replace(/\/+$/, '') || '/console', why),
};

async function render(): Promise<void> {
  const path = location.pathname.replace(/\/+$/, '') || '/console';
  const session = currentSession();
  if (!session) return signedOutView(path);
  drawHeader(path, session.name, session.iss);
  show(root, h('p', { class: 'muted' }, 'Loading…'));
  try {
    const request = /^\/console\/requests\/([^/]+)$/.exec(path);
    if (request) await requestView(ctx, decodeURIComponent(request[1] as string));
    else if (path === '/console/mine') await mineView(ctx);
    else if (path === '/console/break-glass') await breakGlassView(ctx);
    else if (path === '/console/audit') await auditView(ctx);
    else await decideView(ctx);
  } catch (error) {
    if (error instanceof SignedOut) return signInAgain(path, error.message);
    show(root, h('p', { class: 'problem', role: 'alert' }, untrusted(error instanceof Error ? error.message : String(error))));
  }
}

function drawHeader(path: string, name: string, iss: string): void {
  show(
    nav,
    NAV.map(([target, label]) => h('a', { href: target, onclick: follow(ctx, target), 'aria-current': target === path ? 'page' : undefined }, label)),
  );
  show(
    who,
    h('span', { title: iss, 'data-testid': 'signed-in-as' }, untrusted(name)),
    h('button', { type: 'button', class: 'link', 'data-testid': 'sign-out', onclick: signOut }, 'Sign out'),
  );
}

/** Forgets the ID token, and reloads so nothing of this page's memory survives. */
function signOut(): void {
  forget();
  location.replace('/console/signed-out');
}

function signedOutView(path: string): void {
  show(nav);
  show(who);
  if (path === '/console/signed-out') {
    show(
      root,
      h('section', { class: 'card' },
        h('h1', {}, 'You have signed out'),
        h('p', {}, 'The console kept your ID token only in the memory of that page, and it is gone.'),
        config?.end_session_endpoint
          ? h('p', { class: 'muted' }, 'Your session at the sign-in issuer may still be open; sign out there too on a shared computer.')
          : null,
        h('p', {}, h('button', { type: 'button', class: 'primary', 'data-testid': 'sign-in', onclick: () => void start('/console') }, 'Sign in again')),
      ),
    );
    return;
  }
  void start(path);
}

function signInAgain(path: string, why: string): void {
  show(nav);
  show(who);
  show(
    root,
    h('section', { class: 'card' },
      h('p', { class: 'problem', role: 'alert' }, why),
      h('p', {}, h('button', { type: 'button', class: 'primary', 'data-testid': 'sign-in', onclick: () => void start(path) }, 'Sign in again')),
    ),
  );
}

async function start(returnTo: string): Promise<void> {
  if (!config) return;
  show(root, h('p', { class: 'muted' }, 'Signing in…'));
  await beginSignIn(config, returnTo);
}

async function boot(): Promise<void> {
  const response = await fetch('/console/config.json', { credentials: 'omit', cache: 'no-store' });
  if (!response.ok) {
    const detail = ((await response.json().catch(() => ({}))) as { detail?: string }).detail;
    show(root, h('p', { class: 'problem', role: 'alert' }, detail ?? `The console cannot start (HTTP ${response.status}).`));
    return;
  }
  config = (await response.json()) as ConsoleDocument;
  if (config.development) document.body.prepend(h('p', { class: 'banner danger' }, 'DEVELOPMENT sign-in: this broker lets anyone sign in as anyone. Never in production.'));
  if (location.pathname === '/console/callback') {
    try {
      const next = await completeSignIn(config);
      history.replaceState(null, '', next);
    } catch (error) {
      return signInAgain('/console', error instanceof Error ? error.message : String(error));
    }
  }
  await render();
}

window.addEventListener('popstate', () => void render());
boot().catch((error: unknown) => show(root, h('p', { class: 'problem', role: 'alert' }, untrusted(error instanceof Error ? error.message : String(error)))));

import { basename } from 'node:path';
import { describe, expect, it } from 'vitest';
import { browserCommand } from '../../src/cli/open-browser.js';

/**
 * How `jit login` opens the sign-in page: the program and its arguments on each platform. Every
 * authorization URL holds several `&`; cmd.exe reads `&` as the end of a command and runs what
 * follows, so on Windows the URL must never pass through it (nor through any other shell).
 */

/** An authorization URL as a hostile SSO or broker could shape it: cmd's metacharacters, a quote, spaces. */
const HOSTILE = 'https://sso.example.com/authorize?client_id=jit-cli&state=a^b&pct=100%&q="x" & calc.exe&rest=%USERPROFILE%|more <in >out';
const SHELLS = ['cmd', 'cmd.exe', 'powershell', 'powershell.exe', 'pwsh', 'pwsh.exe', 'sh', 'bash'];

describe('browserCommand', () => {
  it.each(['win32', 'darwin', 'linux'] as const)('on %s hands the URL to the opener as exactly one argument, through no shell', (platform) => {
    const { command, args } = browserCommand(platform, HOSTILE);
    expect(SHELLS).not.toContain(basename(command.replaceAll('\\', '/')).toLowerCase());
    expect(args.some((arg) => /^\/[ck]$/i.test(arg))).toBe(false);
    // The URL is one argument, whole: the same URL as a browser reads it, from its scheme to its end.
    const url = args.at(-1) as string;
    expect(new URL(url).href).toBe(new URL(HOSTILE).href);
    expect(args.filter((arg) => arg.includes('sso.example.com'))).toEqual([url]);
    expect(url.startsWith('https://sso.example.com/authorize?client_id=jit-cli&state=a^b&pct=100%&q=')).toBe(true);
    expect(url.endsWith('&rest=%USERPROFILE%|more%20%3Cin%20%3Eout') || url.endsWith('&rest=%USERPROFILE%|more <in >out')).toBe(true);
  });

  it('on Windows runs rundll32 from the system folder, and the URL needs no quoting on its command line', () => {
    const { command, args } = browserCommand('win32', HOSTILE);
    // By its full path: Windows looks for a bare program name in the current folder first.
    expect(command).toBe('C:\\Windows\\System32\\rundll32.exe');
    expect(browserCommand('win32', HOSTILE, { SystemRoot: 'D:\\WINNT' }).command).toBe('D:\\WINNT\\System32\\rundll32.exe');
    expect(args).toEqual(['url.dll,FileProtocolHandler', new URL(HOSTILE).href]);
    // Node quotes an argument holding white space or a quote on the Windows command line, and
    // rundll32 would hand those quotes on to url.dll: the URL carries neither (spaces and quotes
    // are percent-encoded, as the browser would send them anyway).
    expect(args[1]).not.toMatch(/[\s"]/);
  });

  it('on macOS runs open, elsewhere xdg-open', () => {
    expect(browserCommand('darwin', HOSTILE)).toEqual({ command: 'open', args: [new URL(HOSTILE).href] });
    expect(browserCommand('linux', HOSTILE)).toEqual({ command: 'xdg-open', args: [new URL(HOSTILE).href] });
    expect(browserCommand('freebsd', HOSTILE).command).toBe('xdg-open');
  });

  it('opens web pages only: a file, a share or a script given as the sign-in page is not run', () => {
    for (const platform of ['win32', 'darwin', 'linux'] as const) {
      for (const url of ['file:///C:/Windows/System32/calc.exe', 'file:///usr/bin/xterm', '\\\\evil.example.com\\share\\x.exe', 'javascript:alert(1)', 'ms-msdt:/id', 'calc.exe']) {
        expect(() => browserCommand(platform, url), `${platform} ${url}`).toThrow(/not a web address/);
      }
    }
  });
});

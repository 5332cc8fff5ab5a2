// Shared helpers of the browser tests: launching the system Chromium, waiting on
// conditions with deadlines (never fixed sleeps), calling the API directly.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export async function launch() {
  const executablePath = process.env.EDGEFLEET_CHROMIUM || "/usr/bin/chromium";
  const userDataDir = mkdtempSync(join(tmpdir(), "edgefleet-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    viewport: { width: 1360, height: 900 },
    acceptDownloads: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
    ],
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") console.log(`browser ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => console.log(`browser page error: ${e}`));
  // Closes the browser and removes its profile (a few MB per run otherwise left in /tmp).
  const close = async () => {
    try {
      await context.close();
    } finally {
      rmSync(userDataDir, { recursive: true, force: true });
    }
  };
  return { context, page, close };
}

/// Polls `check` until it returns `true` (anything else is kept as the diagnostic of a
/// timeout); throws naming `what` after `ms`.
export async function until(what, check, ms = 15000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last === true) return true;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function api(base, key) {
  return async (path, init = {}) => {
    const res = await fetch(base + path, {
      ...init,
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json", ...(init.headers || {}) },
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
}

export function step(name) {
  console.log(`· ${name}`);
}

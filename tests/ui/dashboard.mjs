// The dashboard against a real console: node dashboard.mjs <url> <api key> <facts json>.
// Facts (from tests/it/ui.rs): pending (a pending host id), victim and victim_pid (a real
// agent process to kill), app_host and other_host (simulated hosts with apps and labels).
import { join } from "node:path";
import { launch, until, api, step } from "./lib.mjs";

const [base, key, factsJson] = process.argv.slice(2);
const facts = JSON.parse(factsJson);
const call = api(base, key);
const shots = process.env.EDGEFLEET_SCREENSHOTS || ".";
const { page, close } = await launch();

const names = () =>
  page.$$eval('[data-testid="host-row"]', (rows) => rows.map((r) => r.getAttribute("data-id")));
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/// Waits until the table shows exactly the rows the API returns for `path`.
async function tableMatches(what, path) {
  await until(`${what}: table = GET ${path}`, async () => {
    const want = (await call(path)).items.map((a) => a.id);
    const got = await names();
    return same(want, got) ? true : { want, got };
  });
}

async function card(id) {
  return Number(await page.textContent(`[data-testid="card-${id}"] [data-testid="value"]`));
}

try {
  step("login with the API key");
  await page.goto(base + "/");
  await page.fill("#api-key", "wrong-key");
  await page.click("button[type=submit]");
  await until("a refused key is explained", () => page.isVisible("text=does not know this key"));
  await page.fill("#api-key", key);
  await page.click("button[type=submit]");
  await page.waitForSelector('[data-testid="card-total"] [data-testid="value"]');
  await page.evaluate(() => (window.__noReload = true));

  step("overview numbers equal /api/fleet/summary");
  await until("overview cards = API", async () => {
    const s = await call("/api/fleet/summary");
    const got = {
      total: await card("total"),
      online: await card("online"),
      offline: await card("offline"),
      pending: await card("pending"),
      stale: await card("stale"),
      alerts: await card("alerts"),
    };
    const want = { total: s.total, online: s.online, offline: s.offline, pending: s.pending, stale: s.stale, alerts: s.firing_alerts };
    return same(got, want) ? true : { got, want };
  });

  step("default table = API");
  await tableMatches("default list", "/api/agents?page=1&per_page=50&sort=hostname&order=asc");

  step("search (debounced, server-side q)");
  await page.fill('[data-testid="search"]', "sim-0001");
  await tableMatches("search", "/api/agents?page=1&per_page=50&sort=hostname&order=asc&q=sim-0001");
  const search = await page.evaluate(() => location.search);
  if (!search.includes("q=sim-0001")) throw new Error(`search not in the URL: ${search}`);
  const searched = (await names()).length;
  if (searched < 1 || searched > 10) throw new Error(`search returned ${searched} rows`);

  step("clear filters");
  await page.click('[data-testid="clear"]');
  await tableMatches("cleared", "/api/agents?page=1&per_page=50&sort=hostname&order=asc");
  if ((await page.inputValue('[data-testid="search"]')) !== "") throw new Error("search box not cleared");

  step("sort by OS, ascending then descending (a stable column)");
  await page.click('button[data-sort="os"]');
  await tableMatches("sort os asc", "/api/agents?page=1&per_page=50&sort=os&order=asc");
  await page.click('button[data-sort="os"]');
  await tableMatches("sort os desc", "/api/agents?page=1&per_page=50&sort=os&order=desc");

  step("sort by CPU: the column is in order, missing values last");
  await page.click('button[data-sort="cpu"]');
  await until("cpu ascending", async () => {
    if (!(await page.evaluate(() => location.search.includes("sort=cpu")))) return "not yet";
    const cells = await page.$$eval('[data-testid="host-row"] td:nth-child(5)', (c) => c.map((x) => x.textContent));
    const nums = cells.filter((c) => c.includes("%")).map((c) => parseInt(c, 10));
    const sorted = nums.every((v, i) => i === 0 || nums[i - 1] <= v);
    const nullsLast = cells.findIndex((c) => !c.includes("%")) === -1 || cells.slice(cells.findIndex((c) => !c.includes("%"))).every((c) => !c.includes("%"));
    return nums.length > 20 && sorted && nullsLast ? true : cells;
  });
  await page.click('button[data-sort="os"]');

  step("page size 25 and the next page");
  await page.selectOption('[data-testid="page-size"]', "25");
  await tableMatches("per_page 25", "/api/agents?page=1&per_page=25&sort=os&order=asc");
  await page.click('[data-testid="next"]');
  await tableMatches("page 2", "/api/agents?page=2&per_page=25&sort=os&order=asc");

  step("an OS bar filters the list and returns to page 1");
  const os = await page.getAttribute(".os-bar >> nth=0", "data-os");
  await page.click(".os-bar >> nth=0");
  await tableMatches("os filter", `/api/agents?page=1&per_page=25&sort=os&order=asc&os=${encodeURIComponent(os)}`);
  const osCells = await page.$$eval('[data-testid="host-row"] [data-testid="os"]', (c) => c.map((x) => x.textContent));
  if (!osCells.length || osCells.some((c) => c !== os)) throw new Error(`OS filter shows ${osCells}`);

  step("the state is in the URL: a reload shows the same table");
  await page.reload();
  await tableMatches("after reload", `/api/agents?page=1&per_page=25&sort=os&order=asc&os=${encodeURIComponent(os)}`);
  await page.evaluate(() => (window.__noReload = true));
  await page.click('[data-testid="clear"]');

  step("approve the pending agent");
  await page.waitForSelector(`[data-testid="pending"] tr[data-id="${facts.pending}"]`);
  await page.click(`[data-testid="pending"] tr[data-id="${facts.pending}"] button:has-text("Approve")`);
  await until("approved message", () => page.isVisible('[data-testid="pending-message"]:has-text("approved")'));
  const pendingHost = await call(`/api/agents/${facts.pending}`);
  await page.fill('[data-testid="search"]', pendingHost.hostname);
  await until("the approved host in the list, not pending", async () => {
    const badge = await page.textContent(`tr[data-id="${facts.pending}"] [data-testid="status"]`).catch(() => null);
    return badge && badge !== "Pending" ? true : badge;
  }, 30000);

  step("host detail: a metrics chart with points and a hover readout");
  await page.goto(`${base}/hosts/${facts.app_host}?tab=metrics`);
  await page.evaluate(() => (window.__noReload = true));
  const points = await until("chart points", async () => Number(await page.getAttribute('[data-testid="chart-cpu"]', "data-points")) >= 2);
  const d = await page.getAttribute('[data-testid="chart-cpu"] path.line', "d");
  if (!d || !d.startsWith("M")) throw new Error(`no line path: ${d}`);
  const ticks = await page.$$eval('[data-testid="chart-cpu"] text.tick', (t) => t.map((x) => x.textContent));
  if (ticks.length < 6) throw new Error(`too few tick labels: ${ticks}`);
  const box = await page.locator('[data-testid="chart-cpu"] svg').boundingBox();
  await page.mouse.move(box.x + box.width * 0.97, box.y + box.height / 2);
  await until("hover readout", async () => ((await page.textContent('[data-testid="chart-cpu"] [data-testid="readout"]')) || "").includes("%"));
  // Network charts: points, and an axis scaled to the data with bit/s labels.
  for (const dir of ["in", "out"]) {
    const sel = `[data-testid="chart-network-${dir}"]`;
    await until(`network ${dir} points`, async () => Number(await page.getAttribute(sel, "data-points")) >= 2);
    const labels = await page.$$eval(`${sel} text.tick`, (t) => t.map((x) => x.textContent));
    if (!labels.some((l) => /^[0-9.]+[kMG]?$/.test(l) && l !== "0")) throw new Error(`network ${dir}: no rate axis labels in ${labels}`);
  }

  step("apps tab: restart an app, followed to success");
  await page.click('button[data-tab="apps"]');
  await page.click('[data-testid="restart"] >> nth=0');
  await until("command succeeded", async () => {
    const state = await page.getAttribute('[data-testid="command"]', "data-state").catch(() => null);
    if (["failed", "rejected", "expired", "rolled_back"].includes(state)) throw new Error(`command ${state}`);
    return state === "succeeded" ? true : state;
  }, 30000);

  step("audit tab shows the restart");
  await page.click('button[data-tab="audit"]');
  await until("command audit rows", () => page.isVisible('[data-testid="audit-row"][data-action="command_result"]'));

  step("inventory: rows, search, CSV export, compare, rescan");
  await page.click('button[data-tab="inventory"]');
  const inventoryPath = `/api/agents/${facts.app_host}/inventory`;
  const pkgNames = () => page.$$eval('[data-testid="package-row"]', (r) => r.map((x) => x.getAttribute("data-name")));
  await until("inventory rows = API", async () => {
    const want = (await call(`${inventoryPath}?page=1&per_page=100`)).items.map((p) => p.name);
    const got = await pkgNames();
    return want.length > 0 && same(want, got) ? true : { want, got };
  });
  const all = await pkgNames();
  const needle = all[Math.floor(all.length / 2)];
  await page.fill('[data-testid="inventory-search"]', needle);
  await until("inventory search = API", async () => {
    const want = (await call(`${inventoryPath}?page=1&per_page=100&q=${encodeURIComponent(needle)}`)).items.map((p) => p.name);
    const got = await pkgNames();
    return got.length < all.length && same(want, got) ? true : { want, got };
  });
  const [download] = await Promise.all([page.waitForEvent("download"), page.click('[data-testid="export-csv"]')]);
  const csvPath = join(shots, "inventory.csv");
  await download.saveAs(csvPath);
  const { readFileSync } = await import("node:fs");
  const csv = readFileSync(csvPath, "utf8");
  const direct = await (await fetch(`${base}${inventoryPath}.csv`, { headers: { Authorization: `Bearer ${key}` } })).text();
  if (csv !== direct) throw new Error(`the exported CSV differs from GET ${inventoryPath}.csv`);
  const installed = (await call(`${inventoryPath}?page=1&per_page=100`)).installed;
  if (csv.trim().split("\n").length - 1 !== installed) throw new Error(`CSV has ${csv.trim().split("\n").length - 1} rows, ${installed} installed`);
  await page.fill('[data-testid="compare-with"]', facts.other_host);
  await page.click('[data-testid="compare"] button[type=submit]');
  const cmp = await call(`/api/inventory/compare?a=${facts.app_host}&b=${facts.other_host}`);
  await until("compare shows the API's diff", async () => {
    const text = await page.textContent('[data-testid="compare-summary"]').catch(() => "");
    const want = `${cmp.same} the same, ${cmp.differs.length} differ, ${cmp.only_a.length} only here, ${cmp.only_b.length} only on`;
    const rows = (await page.$$('[data-testid="differs-row"]')).length;
    return text.includes(want) && rows === cmp.differs.length ? true : { text, want, rows };
  });

  await page.click('[data-testid="rescan"]');
  await until("rescan followed to success", async () => {
    const t = (await page.textContent('[data-testid="rescan-state"]').catch(() => "")) || "";
    if (/failed|rejected|expired/.test(t)) throw new Error(t);
    return t.includes("succeeded") ? true : t;
  }, 30000);

  step("packages page: hosts by version");
  await page.click("a.nav-link:has-text('Packages')");
  await page.fill('[data-testid="package-name"]', needle);
  await page.press('[data-testid="package-name"]', "Enter");
  const pkg = await call(`/api/packages?name=${encodeURIComponent(needle)}`);
  await until("package summary = API", async () => {
    const text = await page.textContent('[data-testid="package-summary"]').catch(() => "");
    return text.includes(`installed on ${pkg.hosts} hosts in ${pkg.versions.length} versions`) ? true : text;
  });

  step("audit log page: entries and the chain check");
  await page.click("a.nav-link:has-text('Audit log')");
  await until("verify banner", () => page.isVisible('[data-testid="verify"]:has-text("intact")'));
  await until("audit rows", async () => (await page.$$('[data-testid="audit-row"]')).length > 0);

  step("groups page: a group made through the API, with its host count");
  const groupId = "ui-test-pair";
  const made = await call("/api/groups", {
    method: "POST",
    body: JSON.stringify({ id: groupId, name: "UI test pair", members: [facts.app_host, facts.other_host], settings: { offline_grace_s: 120 } }),
  });
  if (made.agents !== 2) throw new Error(`the API counts ${made.agents} hosts in ${groupId}`);
  await page.click("a.nav-link:has-text('Groups')");
  const groupRow = `[data-testid="group-row"][data-id="${groupId}"]`;
  await until("the group's host count = API", async () => {
    const got = await page.textContent(`${groupRow} [data-testid="group-agents"]`).catch(() => null);
    const want = (await call(`/api/groups/${groupId}`)).agents;
    return got === String(want) ? true : { got, want };
  });
  if (!(await page.textContent(groupRow)).includes("offline grace 120 s")) throw new Error("the group's settings are not shown");

  step("groups page: create a dynamic group with the form");
  const appLabels = (await call(`/api/agents/${facts.app_host}`)).labels;
  const site = appLabels.site;
  if (!site) throw new Error(`the simulated host has no site label: ${JSON.stringify(appLabels)}`);
  await page.click('[data-testid="new-group"]');
  await page.fill('[data-testid="group-id"]', "ui-test-site");
  await page.fill('[data-testid="group-name"]', "UI test site");
  await page.check('[data-testid="kind-dynamic"]');
  await page.fill('[data-testid="group-selector"]', `site=${site}`);
  await page.click('[data-testid="save-group"]');
  await until("the dynamic group listed with the API's count", async () => {
    const got = await page.textContent('[data-testid="group-row"][data-id="ui-test-site"] [data-testid="group-agents"]').catch(() => null);
    const g = await call("/api/groups/ui-test-site").catch((e) => ({ error: String(e) }));
    return g.selector === `site=${site}` && g.agents >= 1 && got === String(g.agents) ? true : { got, g };
  });

  step("host list: the group filter, from the group's link");
  await page.click(`${groupRow} [data-testid="group-agents"]`);
  await tableMatches("group filter", `/api/agents?page=1&per_page=50&sort=hostname&order=asc&group=${groupId}`);
  if ((await names()).length !== 2) throw new Error(`the group filter shows ${(await names()).length} rows`);
  await until("overview scoped to the group", async () => {
    const s = await call(`/api/fleet/summary?group=${groupId}`);
    const got = await card("total");
    return got === s.total && s.total === 2 ? true : { got, want: s.total };
  });
  await page.click('[data-testid="group-chip"] button.x');
  await tableMatches("group chip removed", "/api/agents?page=1&per_page=50&sort=hostname&order=asc");

  step("host list: a label chip filters the list, and its chip removes the filter");
  const selector = `site=${site}`;
  await page.click(`[data-testid="label-value"][data-label="${selector}"]`);
  const labelPath = `/api/agents?page=1&per_page=50&sort=hostname&order=asc&label=${encodeURIComponent(selector)}`;
  await tableMatches("label filter", labelPath);
  const labelled = await page.$$eval('[data-testid="host-row"] [data-testid="labels"]', (c) => c.map((x) => x.textContent));
  const total = (await call("/api/agents?per_page=200")).total;
  if (!labelled.length || labelled.length >= total || labelled.some((t) => !t.split(" · ").includes(selector)))
    throw new Error(`the label filter shows ${JSON.stringify(labelled)} of ${total}`);
  if (!(await page.evaluate(() => location.search)).includes("label=")) throw new Error("the label filter is not in the URL");
  // A typed requirement narrows further: hosts with that site that are not this one's hardware.
  await page.fill('[data-testid="label-input"]', `hw!=${appLabels.hw}`);
  await page.press('[data-testid="label-input"]', "Enter");
  await tableMatches("typed selector", `/api/agents?page=1&per_page=50&sort=hostname&order=asc&label=${encodeURIComponent(`${selector}, hw!=${appLabels.hw}`)}`);
  await page.fill('[data-testid="label-input"]', "site in (");
  await page.press('[data-testid="label-input"]', "Enter");
  await until("a bad selector shows the console's 400", () => page.isVisible('[data-testid="error"]:has-text("HTTP 400")'));
  while ((await page.$$('[data-testid="label-chip"] button.x')).length > 0) {
    const before = (await page.$$('[data-testid="label-chip"]')).length;
    await page.click('[data-testid="label-chip"] >> nth=-1 >> button.x');
    await until("chip removed", async () => (await page.$$('[data-testid="label-chip"]')).length < before);
  }
  await tableMatches("label chips removed", "/api/agents?page=1&per_page=50&sort=hostname&order=asc");

  step("maintenance: entered from the host page, badge in the list, ended");
  const other = await call(`/api/agents/${facts.other_host}`);
  await page.fill('[data-testid="search"]', other.hostname);
  await until("the host row", () => page.isVisible(`tr[data-id="${facts.other_host}"] a`));
  if (await page.isVisible(`tr[data-id="${facts.other_host}"] [data-testid="maintenance"]`)) throw new Error("maintenance badge before maintenance");
  await page.click(`tr[data-id="${facts.other_host}"] a`);
  await page.click('[data-testid="enter-maintenance"]');
  await page.fill('[data-testid="maintenance-reason"]', "swapping the modem");
  await page.fill('[data-testid="maintenance-until"]', "2h");
  await page.check('[data-testid="maintenance-form"] input[value="request-heartbeat"]');
  await page.click('[data-testid="maintenance-submit"]');
  await until("maintenance badge on the host page", () => page.isVisible('.host-head [data-testid="maintenance"]'));
  const m = (await call(`/api/agents/${facts.other_host}`)).maintenance;
  if (!m || m.reason !== "swapping the modem" || !m.until || !same(m.allow, ["request-heartbeat"])) throw new Error(`API maintenance: ${JSON.stringify(m)}`);
  const headText = await page.textContent('[data-testid="maintenance-text"]');
  if (!headText.includes("swapping the modem") || !headText.includes("until ")) throw new Error(`maintenance text: ${headText}`);
  // The groups panel lists the static group.
  await until("the host's groups", async () => ((await page.textContent('[data-testid="host-groups"]')) || "").includes(groupId));
  await page.click("a.nav-link:has-text('Hosts')");
  await page.fill('[data-testid="search"]', other.hostname);
  await until("maintenance badge in the list, reason in its tooltip", async () => {
    const title = await page.getAttribute(`tr[data-id="${facts.other_host}"] [data-testid="maintenance"]`, "title").catch(() => null);
    return title && title.includes("swapping the modem") ? true : title;
  });
  await page.click(`tr[data-id="${facts.other_host}"] a`);
  await page.click('[data-testid="end-maintenance"]');
  await until("maintenance ended", async () => (await call(`/api/agents/${facts.other_host}`)).maintenance == null && !(await page.isVisible('.host-head [data-testid="maintenance"]')));

  step("host page: an operator label wins over the agent's, and is removed again");
  await page.fill('[data-testid="label-key"]', "site");
  await page.fill('[data-testid="label-value-input"]', "bench");
  await page.click('[data-testid="label-form"] button[type=submit]');
  await until("operator label shown with its source", async () => {
    const t = await page.textContent('[data-testid="label-row"][data-key="site"]').catch(() => "");
    return t.includes("bench") && t.includes("operator") ? true : t;
  });
  if ((await call(`/api/agents/${facts.other_host}`)).labels.site !== "bench") throw new Error("the API did not get the label");
  await page.click('[data-testid="label-row"][data-key="site"] button:has-text("Remove")');
  await until("the agent's own label back", async () => {
    const t = await page.textContent('[data-testid="label-row"][data-key="site"] [data-testid="label-source"]').catch(() => "");
    return t === "agent" ? true : t;
  });

  step("rollouts page: a rollout's waves, followed without a reload");
  const rollout = await call("/api/rollouts", {
    method: "POST",
    body: JSON.stringify({ name: "ui test push", action: "push-config", app: "sensor-hub", values: { "log.level": "debug" }, group: groupId, canary: 1, waves: [100], soak: "1s" }),
  });
  await page.click("a.nav-link:has-text('Rollouts')");
  const rolloutRow = `[data-testid="rollout-row"][data-id="${rollout.id}"]`;
  await until("the rollout listed", () => page.isVisible(rolloutRow));
  await page.click(`${rolloutRow} a`);
  const waveLabels = () => page.$$eval('[data-testid="wave"] [data-testid="wave-label"]', (w) => w.map((x) => x.textContent));
  await until("waves = API", async () => {
    const r = await call(`/api/rollouts/${rollout.id}`);
    const got = await waveLabels();
    const want = r.waves.map((w) => w.label);
    return want.length === 2 && same(got, want) ? true : { got, want };
  });
  const hostRows = await page.$$eval('[data-testid="rollout-host"]', (r) => r.map((x) => x.getAttribute("data-id")).sort());
  if (!same(hostRows, [facts.app_host, facts.other_host].sort())) throw new Error(`rollout hosts ${hostRows}`);
  await until("the rollout finishes and the page follows it", async () => {
    const r = await call(`/api/rollouts/${rollout.id}`);
    const state = await page.textContent('.host-head [data-testid="rollout-state"]');
    const waves = await page.$$eval('[data-testid="wave"]', (w) => w.map((x) => x.getAttribute("data-state")));
    const gates = (await page.$$('[data-testid="gate"]')).length;
    const done = !["running", "aborting"].includes(r.state);
    return done && state === r.state && same(waves, r.waves.map((w) => w.state)) && gates === r.waves.filter((w) => w.gate).length && gates > 0
      ? true
      : { api: r.state, state, waves, gates };
  }, 60000);
  const final = ["succeeded", "failed", "rolled-back", "expired", "reverted", "revert-failed"];
  const finished = (await call(`/api/rollouts/${rollout.id}`)).hosts.filter((h) => final.includes(h.state)).length;
  const progress = await page.getAttribute(".host-head .progress", "data-done");
  if (Number(progress) !== finished || finished === 0) throw new Error(`rollout progress ${progress}, API ${finished} hosts done`);

  step("rollouts page: create one with the form");
  await page.click("a.nav-link:has-text('Rollouts')");
  await page.click('[data-testid="new-rollout"]');
  await page.fill('[data-testid="rollout-name"]', "ui test slow");
  await page.fill('[data-testid="rollout-app"]', "sensor-hub");
  await page.fill('[data-testid="rollout-config"]', "log.level = info");
  await until("groups in the target list", async () => (await page.$$(`[data-testid="rollout-group"] option[value="${groupId}"]`)).length === 1);
  await page.selectOption('[data-testid="rollout-group"]', groupId);
  await page.fill('[data-testid="rollout-waves"]', "50, 100");
  await page.fill('[data-testid="rollout-soak"]', "1h");
  await page.click('[data-testid="create-rollout"]');
  await until("the new rollout's page", async () => /\/rollouts\/[^/]+$/.test(new URL(page.url()).pathname));
  const slow = await call(`/api/rollouts/${decodeURIComponent(new URL(page.url()).pathname.split("/").pop())}`);
  const slowHosts = slow.hosts.map((h) => h.agent).sort();
  if (slow.name !== "ui test slow" || slow.action !== "push-config" || slow.app !== "sensor-hub" || slow.soak_s !== 3600 || !same(slow.percents, [50, 100]) || !same(slowHosts, [facts.app_host, facts.other_host].sort()))
    throw new Error(`the form made ${JSON.stringify({ ...slow, hosts: slowHosts })}`);

  step("rollout page: pause, resume and abort (confirmed)");
  const shownState = () => page.textContent('.host-head [data-testid="rollout-state"]');
  await until("running", async () => (await shownState()) === "running");
  await page.click('[data-testid="rollout-pause"]');
  await until("paused in the UI and the API", async () =>
    (await shownState()) === "paused" && (await call(`/api/rollouts/${slow.id}`)).state === "paused");
  await page.click('[data-testid="rollout-resume"]');
  await until("running again", async () => (await shownState()) === "running");
  page.once("dialog", (d) => d.accept());
  await page.click('[data-testid="rollout-abort"]');
  await until("aborted", async () => {
    const api = (await call(`/api/rollouts/${slow.id}`)).state;
    const shown = await shownState();
    return ["aborting", "aborted"].includes(api) && (shown === api || shown === "aborted") ? true : { api, shown };
  }, 30000);

  step("a killed agent turns Offline without a reload");
  await page.click("a.nav-link:has-text('Hosts')");
  const victim = await call(`/api/agents/${facts.victim}`);
  await page.fill('[data-testid="search"]', victim.hostname);
  await until("victim row online", async () =>
    (await page.textContent(`tr[data-id="${facts.victim}"] [data-testid="status"]`).catch(() => null)) === "Online");
  // With the live stream up the badge follows its status event, not the 30 s refresh.
  await until("live events connected", async () => ((await page.textContent('[data-testid="live"]')) || "").includes("Live"));
  process.kill(facts.victim_pid, "SIGKILL");
  await until("victim Offline", async () =>
    (await page.textContent(`tr[data-id="${facts.victim}"] [data-testid="status"]`).catch(() => null)) === "Offline", 20000);
  if (!(await page.evaluate(() => window.__noReload))) throw new Error("the page reloaded");

  step("a narrow window still works");
  await page.setViewportSize({ width: 420, height: 800 });
  await until("table visible when narrow", () => page.isVisible('[data-testid="host-table"]'));

  console.log("dashboard: all checks passed");
  await close();
} catch (e) {
  const path = join(shots, "dashboard-failure.png");
  await page.screenshot({ path, fullPage: true }).catch(() => {});
  console.error(`FAILED: ${e.stack || e}\nscreenshot: ${path}\nurl: ${page.url()}`);
  await close().catch(() => {});
  process.exit(1);
}

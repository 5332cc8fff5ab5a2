// docs/overview.png: node screenshot.mjs <url of a demo console> <output png>.
// Run by `cargo xtask screenshot`, which starts the demo console.
import { launch, until, step } from "./lib.mjs";

const [base, out] = process.argv.slice(2);
const { page, close } = await launch();
try {
  step("log in to the demo");
  await until("the console", async () => (await fetch(base + "/healthz")).ok, 30000);
  await page.setViewportSize({ width: 1360, height: 1000 });
  await page.goto(base + "/");
  await page.click('[data-testid="demo-login"]');
  step("wait for the fleet");
  await until("most of the demo fleet online with vitals", async () => {
    await page.reload();
    await page.waitForSelector('[data-testid="card-online"] [data-testid="value"]');
    const online = Number(await page.textContent('[data-testid="card-online"] [data-testid="value"]'));
    const cpu = await page.$$eval('[data-testid="host-row"] td:nth-child(5)', (c) => c.filter((x) => x.textContent.includes("%")).length);
    return online >= 36 && cpu >= 30 ? true : { online, cpu };
  }, 90000);
  await until("live", async () => ((await page.textContent('[data-testid="live"]')) || "").includes("Live"));
  await page.screenshot({ path: out });
  console.log(`wrote ${out}`);
  await close();
} catch (e) {
  console.error(`FAILED: ${e.stack || e}`);
  await close().catch(() => {});
  process.exit(1);
}

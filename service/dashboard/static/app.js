// The dashboard's entry: the API key, hash routes, and the life of a page (its timers end when
// the user navigates away).

import { checkKey, forgetKey, onUnauthorized, storedKey } from "./api.js";
import { comparePage, jobPage } from "./jobs.js";
import { jobsPage } from "./runs.js";
import { studiesPage, studyPage } from "./studies.js";
import { sweepPage, sweepsPage } from "./sweeps.js";
import { h } from "./ui.js";

const ROUTES = [
  [/^\/?(jobs)?$/, jobsPage, "jobs"],
  [/^\/job\/([^/]+)$/, jobPage, "jobs"],
  [/^\/compare$/, comparePage, "compare"],
  [/^\/sweeps$/, sweepsPage, "sweeps"],
  [/^\/sweep\/([^/]+)$/, sweepPage, "sweeps"],
  [/^\/studies$/, studiesPage, "studies"],
  [/^\/study\/([^/]+)$/, studyPage, "studies"],
];

const $ = (id) => document.getElementById(id);

/** What a page may hold on to: repeating work and cleanups, all ended by close(). */
class PageContext {
  constructor() {
    this.alive = true;
    this.cleanups = [];
  }

  /** Run `work` every `ms` after the previous run ended, until it returns false or the page closes. */
  every(ms, work) {
    let timer = null;
    const tick = async () => {
      let again = true;
      try {
        again = (await work()) !== false;
      } catch (error) {
        console.error(error); // a failed poll is retried on the next tick
      }
      if (again && this.alive) timer = setTimeout(tick, ms);
    };
    timer = setTimeout(tick, ms);
    this.cleanups.push(() => clearTimeout(timer));
  }

  onLeave(cleanup) {
    this.cleanups.push(cleanup);
  }

  close() {
    this.alive = false;
    this.cleanups.forEach((cleanup) => cleanup());
  }
}

let current = null;

function leave() {
  current?.close();
  current = null;
  $("page").replaceChildren();
}

async function route() {
  leave();
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const found = ROUTES.map(([pattern, page, nav]) => [path.match(pattern), page, nav]).find(([m]) => m);
  // Each page draws into its own element: work still in flight after a navigation lands in a
  // detached element, never in the next page.
  const root = h("div", { class: "view" });
  $("page").append(root);
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", Boolean(found) && link.dataset.nav === found[2]);
  }
  if (!found) {
    root.append(h("p", {}, "No such page. ", h("a", { href: "#/jobs" }, "See the jobs")));
    return;
  }
  const [match, page] = found;
  const context = (current = new PageContext());
  try {
    await page(root, { id: match[1] && decodeURIComponent(match[1]), params: new URLSearchParams(query), context });
  } catch (error) {
    if (!context.alive || error.status === 401) return;
    console.warn(error); // its stack, for whoever opens the console
    root.append(h("p", { class: "error" }, `Could not load this page: ${error.message}`));
  }
}

function askForKey(message) {
  leave();
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("key-message").textContent = message;
  $("api-key").value = "";
  $("api-key").focus();
}

function signedIn(me) {
  $("login").hidden = true;
  $("nav").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = `${me.tenant} · key ${me.key_id}${me.is_admin ? " (admin)" : ""}`;
  route();
}

function rejected(error) {
  if (error.status === 401 || error.status === 403) {
    return `The service rejected this key (${error.status}: ${error.message}). Check that you copied the whole key, or create one with: symopt keys create --tenant NAME`;
  }
  return `Could not reach the service to check the key: ${error.message}`;
}

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  $("key-message").textContent = "Checking…";
  try {
    signedIn(await checkKey(key));
  } catch (error) {
    askForKey(rejected(error));
  }
});

$("sign-out").addEventListener("click", () => {
  forgetKey();
  askForKey("");
});

onUnauthorized((message) => askForKey(`The service no longer accepts the key (${message}). Enter a valid key.`));

window.addEventListener("hashchange", () => {
  if (storedKey() && $("login").hidden) route();
});

async function start() {
  const key = storedKey();
  if (!key) return askForKey("");
  try {
    signedIn(await checkKey(key));
  } catch (error) {
    if (error.status === 401 || error.status === 403) forgetKey();
    askForKey(rejected(error));
  }
}

start();

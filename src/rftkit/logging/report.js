// rft report's sample browser: filters the graded samples embedded in the page (no network, no library).
// Every value from a run (prompts, completions, reasons) is model or user text: it is only ever set
// as textContent, never parsed as HTML.
(function () {
  "use strict";
  var samples = JSON.parse(document.getElementById("samples-data").textContent);
  var runNames = JSON.parse(document.getElementById("runs-data").textContent);
  samples.forEach(function (s) {  // what the text filter searches: every turn and every reason
    s.search = s.turns.map(function (t) { return t.content; }).concat(s.grades.map(function (g) {
      return g.reason;
    })).join(" ").toLowerCase();
  });
  var PAGE = 50;
  var shown = PAGE;
  var el = function (id) { return document.getElementById(id); };

  function make(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function option(select, value, label) {
    var o = make("option", null, label);
    o.value = value;
    select.appendChild(o);
  }

  var steps = Array.from(new Set(samples.map(function (s) { return s.step; }))).sort(function (a, b) {
    return b - a;
  });
  steps.forEach(function (step) { option(el("f-step"), String(step), "step " + step); });
  if (runNames.length > 1) {
    runNames.forEach(function (name, i) { option(el("f-run"), String(i), name); });
  } else {
    el("f-run-label").style.display = "none";
  }

  function matches(s) {
    var step = el("f-step").value, verdict = el("f-verdict").value, flag = el("f-flag").value;
    var run = el("f-run").value, text = el("f-text").value.toLowerCase();
    if (step !== "all" && String(s.step) !== step) return false;
    if (verdict !== "all" && s.verdict !== verdict) return false;
    if (flag === "flagged" && s.flags.length === 0) return false;
    if (flag === "clean" && s.flags.length > 0) return false;
    if (run !== "all" && String(s.run) !== run) return false;
    if (text && s.search.indexOf(text) < 0) return false;
    return true;
  }

  function card(s) {
    var box = make("article", "sample " + s.verdict.replace(" ", "-"));
    var head = make("div", "head");
    if (runNames.length > 1) head.appendChild(make("span", "run", runNames[s.run]));
    head.appendChild(make("span", "step", "step " + s.step));
    head.appendChild(make("span", "verdict", s.verdict));
    head.appendChild(make("span", "reward", s.reward === null ? "reward: no signal (masked)" :
      "reward " + s.reward.toFixed(3)));
    if (s.example_id !== null) head.appendChild(make("span", "id", "example " + s.example_id));
    if (s.episode) head.appendChild(make("span", "episode", s.episode));
    s.flags.forEach(function (f) { head.appendChild(make("span", "flag", f)); });
    box.appendChild(head);
    var grades = make("ul", "grades");
    s.grades.forEach(function (g) {
      var li = make("li", g.error ? "error" : (g.masked ? "masked" : null));
      li.appendChild(make("b", null, g.name));
      li.appendChild(document.createTextNode(" " + (g.masked ? "masked" : Number(g.score).toFixed(2)) +
        (g.error ? " (raised)" : "") + ": " + g.reason));
      grades.appendChild(li);
    });
    box.appendChild(grades);
    var turns = make("div", "turns");
    s.turns.forEach(function (t) {
      var turn = make("div", "turn " + t.role);
      turn.appendChild(make("div", "role", t.role));
      turn.appendChild(make("pre", null, t.content));
      turns.appendChild(turn);
    });
    box.appendChild(turns);
    return box;
  }

  function render() {
    var hits = samples.filter(matches);
    var list = el("samples");
    list.replaceChildren();
    hits.slice(0, shown).forEach(function (s) { list.appendChild(card(s)); });
    el("count").textContent = "showing " + Math.min(shown, hits.length) + " of " + hits.length +
      " matching samples (" + samples.length + " in all)";
    el("more").style.display = hits.length > shown ? "inline-block" : "none";
  }

  ["f-step", "f-verdict", "f-flag", "f-run"].forEach(function (id) {
    el(id).addEventListener("change", function () { shown = PAGE; render(); });
  });
  el("f-text").addEventListener("input", function () { shown = PAGE; render(); });
  el("more").addEventListener("click", function () { shown += PAGE; render(); });
  render();
})();

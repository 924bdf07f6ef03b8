//! The page around every tab: the tab bar, the message window, the action dialog and the
//! little script that drives them. Everything rendered from data goes through [`escape`].

use std::fmt::Write as _;

/// The tabs, in the order the Management Utilities show them: (path segment, title).
pub(super) const TABS: &[(&str, &str)] = &[
    ("units", "Crypto units"),
    ("admins", "Administrators"),
    ("thresholds", "Signature thresholds"),
    ("master-keys", "Master keys"),
    ("key-storage", "Key storage"),
    ("audit", "Audit"),
];

/// `text` safe inside HTML text and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A table; every cell is escaped. Rows whose flag is set are marked as differing.
pub(super) fn table(headers: &[&str], rows: &[(bool, Vec<String>)]) -> String {
    let mut out = String::from("<table><thead><tr>");
    for header in headers {
        let _ = write!(out, "<th>{}</th>", escape(header));
    }
    out.push_str("</tr></thead><tbody>");
    for (differs, row) in rows {
        out.push_str(if *differs {
            "<tr class=\"differs\">"
        } else {
            "<tr>"
        });
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A button that opens the action dialog for `action` (a JSON object, escaped here); inputs
/// named in `data-inputs` are read into it when clicked.
pub(super) fn action_button(label: &str, action: &serde_json::Value, inputs: &[&str]) -> String {
    format!(
        "<button type=\"button\" class=\"action\" data-action=\"{}\" data-inputs=\"{}\">{}</button>",
        escape(&action.to_string()),
        escape(&inputs.join(" ")),
        escape(label)
    )
}

/// The whole page: tab bar, `body` (already escaped HTML), the message window with `messages`.
pub(super) fn layout(token: &str, tab: &str, body: &str, messages: &[String]) -> String {
    let mut nav = String::new();
    for (path, title) in TABS {
        let _ = write!(
            nav,
            "<a href=\"/{path}?token={}\" class=\"{}\" id=\"tab-{path}\">{}</a>",
            escape(token),
            if *path == tab { "tab current" } else { "tab" },
            escape(title)
        );
    }
    let mut log = String::new();
    for line in messages {
        let _ = write!(log, "<div>{}</div>", escape(line));
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rotor console</title>
<style>{STYLE}</style></head>
<body data-token="{token}" data-tab="{tab}">
<header><h1>rotor console</h1><nav>{nav}</nav></header>
<main>{body}</main>
<section id="messages-window"><h2>Messages</h2><div id="messages">{log}</div></section>
<dialog id="dialog"><form method="dialog" id="dialog-form">
<h2 id="dialog-title">Confirm</h2>
<p id="dialog-plan"></p>
<p id="dialog-warning" class="warning" hidden></p>
<div id="dialog-secrets"></div>
<p id="dialog-error" class="error" hidden></p>
<menu><button type="button" id="dialog-cancel">Cancel</button>
<button type="submit" id="dialog-ok">OK</button></menu>
</form></dialog>
<script>{SCRIPT}</script>
</body></html>"#,
        token = escape(token),
        tab = escape(tab),
    )
}

const STYLE: &str = r#"
body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#161616}
header{background:#161616;color:#fff;padding:.6em 1em}
header h1{font-size:1.1em;margin:0 0 .4em}
nav a.tab{color:#c6c6c6;text-decoration:none;padding:.4em .8em;display:inline-block}
nav a.current{color:#fff;border-bottom:3px solid #0f62fe}
main{padding:1em}
h2{font-size:1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff;margin:.3em 0 .8em}
th,td{border:1px solid #d0d0d0;padding:.25em .6em;text-align:left;font-size:.9em}
th{background:#e0e0e0}
tr.differs td{background:#fff1f1;color:#a2191f;font-weight:bold}
.mono{font-family:monospace}
button{margin:.2em .3em .2em 0;padding:.35em .9em}
input[type=text],input[type=password],input[type=number]{padding:.25em}
#messages-window{margin:1em;background:#fff;border:1px solid #d0d0d0;padding:.5em 1em;max-height:14em;overflow:auto}
#messages div{font-family:monospace;font-size:.85em;white-space:pre-wrap}
.warning{color:#8a3800;font-weight:bold}
.error{color:#a2191f;font-weight:bold;white-space:pre-wrap}
.note{color:#525252;font-size:.9em}
progress{width:30em;height:1.2em}
dialog{min-width:30em;max-width:50em}
dialog label{display:block;margin:.4em 0}
"#;

/// The script: buttons open the dialog with what the action will do, the dialog collects the
/// passwords and PINs the action asks for, and the rotation's progress is polled.
const SCRIPT: &str = r#"
const token = document.body.dataset.token;
const q = (path) => path + (path.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token);
const dialog = document.getElementById('dialog');
let pending = null;

async function post(path, body) {
  const response = await fetch(q(path), {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  if (!response.ok) { return {error: await response.text()}; }
  return await response.json();
}

function addMessages(lines) {
  const box = document.getElementById('messages');
  for (const line of lines || []) {
    const div = document.createElement('div');
    div.textContent = line;
    box.appendChild(div);
  }
  box.parentElement.scrollTop = box.parentElement.scrollHeight;
}

function secretField(prompt) {
  const label = document.createElement('label');
  label.textContent = prompt.replace(/:\s*$/, '') + ' ';
  const input = document.createElement('input');
  input.type = 'password';
  input.className = 'secret';
  input.dataset.prompt = prompt;
  input.autocomplete = 'off';
  label.appendChild(input);
  return label;
}

function showDialog(title, preview) {
  document.getElementById('dialog-title').textContent = title;
  document.getElementById('dialog-plan').textContent = preview.plan || '';
  const warning = document.getElementById('dialog-warning');
  warning.hidden = !preview.warning;
  warning.textContent = preview.warning || '';
  const secrets = document.getElementById('dialog-secrets');
  secrets.replaceChildren(...(preview.secrets || []).map(secretField));
  const error = document.getElementById('dialog-error');
  error.hidden = !preview.error;
  error.textContent = preview.error || '';
  document.getElementById('dialog-ok').textContent = preview.destructive ? 'Yes, do it' : 'OK';
  dialog.showModal();
  const first = secrets.querySelector('input');
  if (first) first.focus();
}

function readAction(button) {
  const action = JSON.parse(button.dataset.action);
  // Each entry is FIELD or FIELD=INPUT-NAME.
  for (const spec of (button.dataset.inputs || '').split(' ').filter(Boolean)) {
    const [field, name] = spec.includes('=') ? spec.split('=') : [spec, spec];
    const inputs = [...document.querySelectorAll('[name="' + name + '"]')];
    if (inputs.length && inputs[0].type === 'checkbox') {
      action[field] = inputs.filter(i => i.checked).map(i => Number(i.value));
    } else if (inputs.length && inputs[0].type === 'number') {
      action[field] = Number(inputs[0].value);
    } else if (inputs.length) {
      action[field] = inputs[0].value;
    }
  }
  return action;
}

for (const button of document.querySelectorAll('button.action')) {
  button.addEventListener('click', async () => {
    const action = readAction(button);
    const preview = await post('/preview', {action});
    if (preview.error) { addMessages(['Error: ' + preview.error]); return; }
    pending = action;
    showDialog(button.textContent, preview);
  });
}

document.getElementById('dialog-cancel').addEventListener('click', () => {
  pending = null;
  document.getElementById('dialog-secrets').replaceChildren();
  dialog.close();
  addMessages(['Cancelled; nothing was changed.']);
});

document.getElementById('dialog-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  if (!pending) { dialog.close(); return; }
  const secrets = {};
  for (const input of document.querySelectorAll('#dialog-secrets input.secret')) {
    secrets[input.dataset.prompt] = input.value;
  }
  document.getElementById('dialog-ok').disabled = true;
  const result = await post('/run', {action: pending, secrets});
  document.getElementById('dialog-ok').disabled = false;
  addMessages(result.messages);
  if (result.needs && result.needs.length) {
    // The action asked for a secret the page did not know it needed (a token PIN, say):
    // ask again with every field it wants.
    showDialog(document.getElementById('dialog-title').textContent,
      {plan: document.getElementById('dialog-plan').textContent, secrets: result.needs, error: result.error});
    return;
  }
  document.getElementById('dialog-secrets').replaceChildren();
  dialog.close();
  pending = null;
  if (result.error) { addMessages(['Error: ' + result.error]); }
  if (result.started) { seen = result.log_length; watchRotation(); } else { setTimeout(() => location.reload(), 300); }
});

function showProgress(p) {
  const box = document.getElementById('rotation-progress');
  if (!box) return;
  const j = p.journal;
  box.hidden = !j && !p.running;
  if (!j) { document.getElementById('rotation-phase').textContent = p.running ? 'preparing the crypto units' : ''; return; }
  document.getElementById('rotation-phase').textContent = j.phase;
  const bar = document.getElementById('rotation-bar');
  bar.max = Math.max(j.whole, 1);
  bar.value = j.done;
  const finished = j.phase === 'completed' || j.phase === 'aborted';
  document.getElementById('rotation-numbers').textContent = finished
    ? j.done + ' of ' + j.whole + ' keys rewrapped.'
    : j.done + ' of ' + j.whole + ' keys rewrapped, ' + j.rate.toFixed(0) + ' keys/s, ' +
      (j.seconds_left === null ? '?' : j.seconds_left.toFixed(0) + ' s') + ' left' + (j.waiting ? ' (waiting: ' + j.waiting + ')' : '');
}

let seen = null;
async function watchRotation() {
  for (;;) {
    const response = await fetch(q('/progress'));
    if (!response.ok) return;
    const p = await response.json();
    if (seen === null) { seen = p.log_length; }
    if (p.log_length > seen) { addMessages(p.log.slice(Math.max(seen - p.log_start, 0))); seen = p.log_length; }
    showProgress(p);
    if (!p.running) { setTimeout(() => location.reload(), 500); return; }
    await new Promise(r => setTimeout(r, 250));
  }
}

if (document.body.dataset.tab === 'master-keys') {
  fetch(q('/progress')).then(r => r.json()).then(p => { showProgress(p); if (p.running) { seen = p.log_length; watchRotation(); } });
}
document.getElementById('messages-window').scrollTop = 1e9;
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_data_is_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
        let html = table(&["A"], &[(false, vec!["<b>".to_owned()])]);
        assert!(html.contains("<td>&lt;b&gt;</td>"), "{html}");
    }
}

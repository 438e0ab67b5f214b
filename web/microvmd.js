/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The microvmd page of Cockpit: the daemon's VMs, live, over its D-Bus API.
 *
 * The table is fed by the daemon's ObjectManager: GetManagedObjects once per connection, then
 * InterfacesAdded/InterfacesRemoved and PropertiesChanged. Nothing is polled; a change made by any
 * client (busctl, microvmctl, another page) shows as soon as its signal arrives.
 *
 * Every call runs as the user logged in to Cockpit (as root once the user turned on Cockpit's
 * administrative access), so polkit decides as it does for microvmctl. What needs the caller's
 * own files (create, snapshot, restore: the daemon opens no path on a non-root caller's behalf,
 * it takes descriptors) and the serial console (a descriptor too) runs microvmctl through the
 * Cockpit bridge, which opens them as that user. Everything else is a D-Bus call from here.
 */
"use strict";

(function () {
    const _ = cockpit.gettext;
    const BUS_NAME = "org.microvmd.MicroVM1";
    const ROOT = "/org/microvmd/MicroVM1";
    const VM_IFACE = "org.microvmd.MicroVM1.VM";
    const OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager";
    const SHUTDOWN_TIMEOUT_SEC = 30;
    const RECONNECT_MS = 2000;

    /* As root when the user turned on Cockpit's administrative access, as the user otherwise.
     * Which of the two is fixed when a channel opens: a change reloads the page (below). */
    const AS_ADMIN_IF_ALLOWED = { superuser: "try" };
    /* Reads nobody asked for (the details, read again on every state change) never make polkit
     * ask for a password; what the user clicks may. */
    const NO_PROMPT = { flags: "" };

    let client = null;
    const vms = new Map(); /* object path → { Name, State, VCPUs, MemoryMiB, Owner, ... } */
    const rows = new Map(); /* object path → its <tr> */
    const busy = new Map(); /* object path → the method in flight */
    const confirming = new Map(); /* object path → the action awaiting its confirmation */
    let selected = null; /* the object path shown in the details */
    let consoleChannel = null;

    const $ = id => document.getElementById(id);

    /* ---- errors ------------------------------------------------------------------------- */

    /* "org.microvmd.MicroVM1.Error.NotAuthorized" → "NotAuthorized" */
    function shortErrorName(name) {
        return name ? name.substring(name.lastIndexOf(".") + 1) : "";
    }

    function errorMessage(ex) {
        const message = (ex.message || "").trim();
        if (message)
            return message;
        if (ex.exit_status !== undefined && ex.exit_status !== null)
            return cockpit.format(_("exit status $0"), ex.exit_status);
        return ex.problem || String(ex);
    }

    function showError(what, ex) {
        const name = shortErrorName(ex.name);
        $("alert-text").textContent = name
            ? cockpit.format(_("$0 failed ($1): $2"), what, name, errorMessage(ex))
            : cockpit.format(_("$0 failed: $1"), what, errorMessage(ex));
        $("alert").hidden = false;
    }

    function clearError() {
        $("alert").hidden = true;
        $("alert-text").textContent = "";
    }

    /* ---- the connection and the model, from the ObjectManager ---------------------------- */

    function plain(variants) {
        const out = {};
        for (const key in variants)
            out[key] = variants[key].v;
        return out;
    }

    function addObject(path, interfaces) {
        if (VM_IFACE in interfaces)
            vms.set(path, plain(interfaces[VM_IFACE]));
    }

    function forgetAll(status) {
        vms.clear();
        busy.clear();
        confirming.clear();
        closeDetails();
        renderAll();
        document.body.dataset.loaded = "false";
        $("daemon-status").textContent = status;
    }

    /* Reads every VM once; the signals, subscribed to before, keep the table current. */
    function loadAll(forClient) {
        forClient.call(ROOT, OBJECT_MANAGER, "GetManagedObjects", [], { type: "" })
                .then(([objects]) => {
                    if (forClient !== client)
                        return;
                    vms.clear();
                    for (const path in objects)
                        addObject(path, objects[path]);
                    if (selected && !vms.has(selected))
                        closeDetails();
                    renderAll();
                    $("daemon-status").textContent = "";
                    document.body.dataset.loaded = "true"; /* for scripts driving the page */
                })
                .catch(ex => {
                    if (forClient === client)
                        forgetAll(cockpit.format(_("microvmd is not reachable: $0"), errorMessage(ex)));
                });
    }

    function onInterfacesAdded(path, iface, signal, [objectPath, interfaces]) {
        addObject(objectPath, interfaces);
        renderAll();
    }

    function onInterfacesRemoved(path, iface, signal, [objectPath, interfaces]) {
        if (interfaces.indexOf(VM_IFACE) < 0)
            return;
        vms.delete(objectPath);
        busy.delete(objectPath);
        confirming.delete(objectPath);
        if (selected === objectPath)
            closeDetails();
        renderAll();
    }

    function onPropertiesChanged(path, iface, signal, [changedIface, changed]) {
        const vm = vms.get(path);
        if (changedIface !== VM_IFACE || !vm)
            return;
        const stateChanged = "State" in changed && changed.State.v !== vm.State;
        Object.assign(vm, plain(changed));
        renderRow(path);
        if (stateChanged && selected === path)
            refreshDetails();
    }

    /*
     * One D-Bus channel to the daemon. The bridge closes it when the daemon's name never
     * appeared (not installed, not activatable) or when the bridge behind it went away: a new
     * one is opened a little later, so a daemon that starts after the page still shows.
     */
    function connect() {
        const c = cockpit.dbus(BUS_NAME, { bus: "system", ...AS_ADMIN_IF_ALLOWED });
        client = c;
        c.subscribe({ path: ROOT, interface: OBJECT_MANAGER, member: "InterfacesAdded" },
                    onInterfacesAdded);
        c.subscribe({ path: ROOT, interface: OBJECT_MANAGER, member: "InterfacesRemoved" },
                    onInterfacesRemoved);
        c.subscribe({ path_namespace: ROOT, interface: "org.freedesktop.DBus.Properties",
                      member: "PropertiesChanged" }, onPropertiesChanged);
        /* Known once the bridge looked the name up, and on every change: a restarted daemon
         * is read afresh. */
        c.addEventListener("owner", (event, owner) => {
            if (c !== client)
                return;
            /* The name is back: say so at once, since its signals may show rows before the
             * read of every VM answers. */
            if (owner) {
                $("daemon-status").textContent = "";
                loadAll(c);
            } else
                forgetAll(_("microvmd is not running"));
        });
        c.addEventListener("close", (event, options) => {
            if (c !== client)
                return;
            client = null;
            forgetAll(cockpit.format(_("microvmd is not reachable: $0"),
                                     options.message || options.problem || _("disconnected")));
            window.setTimeout(connect, RECONNECT_MS);
        });
    }

    /* Administrative access turned on or off: every channel would have to be opened again as
     * the other user. Cockpit leaves that to the page; starting over is the simple way. */
    function watchAdministrativeAccess() {
        const superuser = cockpit.dbus(null, { bus: "internal" }).proxy("cockpit.Superuser", "/superuser");
        let current;
        superuser.addEventListener("changed", () => {
            if (current !== undefined && superuser.Current !== current && superuser.Current !== "init")
                window.location.reload();
            if (superuser.Current !== "init")
                current = superuser.Current;
        });
    }

    /* ---- the table ------------------------------------------------------------------------ */

    const STATE_LABELS = {
        created: _("created"),
        running: _("running"),
        paused: _("paused"),
        stopped: _("stopped"),
        crashed: _("crashed"),
    };

    /*
     * Every row has every button, in the same place; those the state does not allow (VM.xml)
     * are disabled. A button that appeared where the user's next click lands (Delete where
     * Stop was) would do what nobody asked for.
     */
    const ACTIONS = [
        { method: "Start", label: _("Start"), when: ["created", "stopped", "crashed"] },
        { method: "Pause", label: _("Pause"), when: ["running"], signature: "a{sv}", args: [{}] },
        { method: "Resume", label: _("Resume"), when: ["paused"] },
        { method: "Shutdown", label: _("Shut down"), when: ["running"], signature: "u",
          args: [SHUTDOWN_TIMEOUT_SEC] },
        { method: "Reboot", label: _("Reboot"), when: ["running", "paused"] },
        { method: "Stop", label: _("Stop"), when: ["running", "paused"], danger: true },
        { method: "Delete", label: _("Delete"), when: ["created", "stopped", "crashed"], danger: true,
          question: _("Delete $0 for good?") },
    ];

    function button(label, onClick, className) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = label;
        if (className)
            b.className = className;
        b.addEventListener("click", onClick);
        return b;
    }

    /* While a Shutdown waits for the guest, Stop stays possible: it is what ends a guest that
     * does not go down (the Shutdown then answers too). */
    function actionEnabled(path, vm, action) {
        const inFlight = busy.get(path);
        if (inFlight && !(inFlight === "Shutdown" && action.method === "Stop"))
            return false;
        return action.when.indexOf(vm.State) >= 0;
    }

    function fillActions(box, path, vm) {
        const asked = confirming.get(path);
        if (asked) {
            const question = document.createElement("span");
            question.textContent = cockpit.format(asked.question, vm.Name);
            const yes = button(asked.label, () => {
                confirming.delete(path);
                vmAction(path, asked);
            }, "danger");
            yes.dataset.action = "Confirm" + asked.method;
            const no = button(_("Cancel"), () => {
                confirming.delete(path);
                renderRow(path);
            });
            no.dataset.action = "Cancel" + asked.method;
            box.replaceChildren(question, yes, no);
            return;
        }
        const buttons = ACTIONS.map(action => {
            const b = button(action.label, () => {
                if (action.question) {
                    confirming.set(path, action);
                    renderRow(path);
                } else {
                    vmAction(path, action);
                }
            }, action.danger ? "danger" : null);
            b.dataset.action = action.method;
            b.disabled = !actionEnabled(path, vm, action);
            return b;
        });
        const details = button(_("Details"), () => openDetails(path));
        details.dataset.action = "Details";
        box.replaceChildren(...buttons, details);
    }

    function newRow(path) {
        const row = document.createElement("tr");
        row.dataset.path = path;
        for (const className of ["name", "state", "vcpus", "memory", "owner", "actions"])
            row.insertCell().className = className;
        /* A box of its own: a table cell laid out as flex loses its borders. */
        row.cells[5].appendChild(document.createElement("div"));
        return row;
    }

    /* Brings one row in line with the model, in place: the focus and the other rows stay. */
    function renderRow(path) {
        const vm = vms.get(path);
        const row = rows.get(path);
        if (!vm || !row)
            return;
        row.dataset.name = vm.Name;
        row.cells[0].textContent = vm.Name;
        row.cells[1].textContent = STATE_LABELS[vm.State] || vm.State;
        row.cells[1].className = "state state-" + vm.State;
        row.cells[1].dataset.state = vm.State;
        row.cells[2].textContent = String(vm.VCPUs);
        row.cells[3].textContent = cockpit.format(_("$0 MiB"), vm.MemoryMiB);
        row.cells[4].textContent = String(vm.Owner);
        fillActions(row.cells[5].firstChild, path, vm);
        if (selected === path)
            renderDetailsHeader();
    }

    /* After VMs came or went: rows in name order, each made once. */
    function renderAll() {
        for (const path of Array.from(rows.keys())) {
            if (!vms.has(path))
                rows.delete(path);
        }
        const sorted = Array.from(vms.entries()).sort((a, b) => a[1].Name.localeCompare(b[1].Name));
        for (const [path] of sorted) {
            if (!rows.has(path))
                rows.set(path, newRow(path));
            renderRow(path);
        }
        $("vm-rows").replaceChildren(...sorted.map(([path]) => rows.get(path)));
        $("no-vms").hidden = vms.size > 0;
    }

    function vmAction(path, action) {
        const vm = vms.get(path);
        if (!vm || !client)
            return Promise.resolve();
        const what = cockpit.format(_("$0 ($1)"), action.label, vm.Name);
        clearError();
        busy.set(path, action.method);
        renderRow(path);
        return client.call(path, VM_IFACE, action.method, action.args || [],
                           { type: action.signature || "" })
                .catch(ex => showError(what, ex))
                .finally(() => {
                    if (busy.get(path) === action.method)
                        busy.delete(path);
                    renderRow(path);
                });
    }

    /* ---- create, snapshot, restore: microvmctl opens the files as the logged-in user -------- */

    /* microvmctl reads an argument that starts with "-" as an option: what the user types is
     * checked here first, by the daemon's own rules for names, and paths must be absolute (the
     * bridge's working directory means nothing to the user). Option values go in the same
     * argument as their option ("--kernel=PATH"), and positional arguments after "--". */
    const NAME_RULE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/;

    function checkName(name) {
        if (!NAME_RULE.test(name))
            throw new Error(cockpit.format(_("“$0” is no valid name: 1 to 64 characters out of A-Z a-z 0-9 . _ -, not starting with . or -"), name));
        return name;
    }

    function checkPath(path) {
        if (!path.startsWith("/"))
            throw new Error(cockpit.format(_("“$0” is no absolute path"), path));
        return path;
    }

    function microvmctl(args) {
        return cockpit.spawn(["microvmctl"].concat(args), { err: "message", ...AS_ADMIN_IF_ALLOWED });
    }

    function lines(text) {
        return text.split("\n").map(l => l.trim()).filter(l => l !== "");
    }

    function createArgs() {
        const args = ["create", "--kernel=" + checkPath($("create-kernel").value.trim()),
            "--vcpus=" + $("create-vcpus").value, "--memory=" + $("create-memory").value];
        if ($("create-initrd").value.trim())
            args.push("--initrd=" + checkPath($("create-initrd").value.trim()));
        if ($("create-cmdline").value)
            args.push("--cmdline=" + $("create-cmdline").value);
        for (const disk of lines($("create-disks").value))
            args.push("--disk=" + checkPath(disk));
        for (const tap of lines($("create-taps").value))
            args.push("--tap=" + tap);
        if ($("create-start").checked)
            args.push("--start");
        return args.concat(["--", checkName($("create-name").value.trim())]);
    }

    /* Runs microvmctl with the arguments @makeArgs gives (it throws on what it refuses); on
     * success the form is emptied, and closed unless it is part of the details. */
    function submitForm(form, what, makeArgs, { keepOpen = false } = {}) {
        clearError();
        let args;
        try {
            args = makeArgs();
        } catch (ex) {
            showError(what, ex);
            return Promise.resolve();
        }
        const submit = form.querySelector("button[type=submit]");
        submit.disabled = true;
        return microvmctl(args)
                .then(() => {
                    form.hidden = !keepOpen;
                    form.reset();
                })
                .catch(ex => showError(what, ex))
                .finally(() => {
                    submit.disabled = false;
                });
    }

    function showForm(id) {
        for (const other of ["create-form", "restore-form"])
            $(other).hidden = other !== id;
        $(id).querySelector("input").focus();
    }

    /* ---- details ------------------------------------------------------------------------- */

    function renderDetailsHeader() {
        const vm = vms.get(selected);
        $("details-title").textContent = cockpit.format(_("$0 ($1)"), vm.Name,
                                                        STATE_LABELS[vm.State] || vm.State);
        /* A snapshot is of a running or paused VM (VM.xml). */
        $("snapshot-form").hidden = vm.State !== "running" && vm.State !== "paused";
    }

    function show(value) {
        const unwrap = v => (v && typeof v === "object" && "v" in v && "t" in v) ? v.v : v;
        value = unwrap(value);
        if (value && typeof value === "object")
            return JSON.stringify(value, (key, v) => unwrap(v), 1);
        return String(value);
    }

    function fillList(id, dict) {
        const items = [];
        for (const key of Object.keys(dict)) {
            const dt = document.createElement("dt");
            const dd = document.createElement("dd");
            dt.textContent = key;
            dd.textContent = show(dict[key]);
            dd.dataset.key = key;
            items.push(dt, dd);
        }
        $(id).replaceChildren(...items);
    }

    /* Calls @method of the VM shown; its answer is dropped if another VM is shown by then. */
    function readForDetails(path, method) {
        return client.call(path, VM_IFACE, method, [], { type: "", ...NO_PROMPT })
                .then(([value]) => {
                    if (selected !== path)
                        throw new Error("superseded");
                    return value;
                });
    }

    function refreshDetails() {
        const path = selected;
        const vm = vms.get(path);
        if (!vm || !client)
            return;
        renderDetailsHeader();
        const ignoreSuperseded = what => ex => {
            if (ex.message !== "superseded")
                showError(what, ex);
        };
        readForDetails(path, "GetConfig")
                .then(config => fillList("details-config", Object.assign({}, config, {
                    Owner: vm.Owner,
                    UUID: vm.UUID,
                    StateChangedAt: new Date(vm.StateChangedAt / 1000).toISOString(),
                })))
                .catch(ignoreSuperseded(_("Reading the configuration")));
        readForDetails(path, "GetStats")
                .then(stats => fillList("details-stats", stats))
                .catch(ignoreSuperseded(_("Reading the statistics")));
        readForDetails(path, "GetExitReason")
                .then(reason => {
                    $("details-exit").textContent = reason || _("none");
                })
                .catch(() => {});
    }

    function openDetails(path) {
        if (selected !== path) {
            disconnectConsole();
            consoleClear();
            $("details-config").replaceChildren();
            $("details-stats").replaceChildren();
            $("details-exit").textContent = "";
        }
        selected = path;
        $("details").hidden = false;
        refreshDetails();
        $("details").scrollIntoView();
    }

    function closeDetails() {
        disconnectConsole();
        selected = null;
        $("details").hidden = true;
    }

    /* ---- the serial console: microvmctl console on a pty, as Cockpit's terminal does -------- */

    const MAX_CONSOLE_CHARS = 200000;
    let consoleText = "";
    let consoleCarry = ""; /* an escape sequence cut in two by the stream */
    let consoleFlushPending = false;

    function consoleClear() {
        consoleText = "";
        consoleCarry = "";
        $("console").textContent = "";
    }

    /*
     * A plain-text terminal: control sequences are dropped; carriage returns and backspaces are
     * kept in the spirit of a serial line. Enough for a boot log and a shell prompt. The text is
     * kept here and written to the page once per frame, so a chatty guest costs one DOM update
     * per frame, not one per chunk.
     */
    function consoleWrite(text) {
        text = consoleCarry + text;
        const cut = text.match(/\x1b(\[[0-9;?]*[ -/]*|\][^\x07\x1b]*|[()]?)?$/);
        consoleCarry = cut ? cut[0] : "";
        text = text.slice(0, text.length - consoleCarry.length)
                .replace(/\x1b\][^\x07\x1b]*(\x07|\x1b\\)/g, "") /* OSC: window titles */
                .replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, "") /* CSI: colours, cursor moves */
                .replace(/\x1b[()][0-9A-Za-z]|\x1b[=>78cDEHM]/g, "")
                .replace(/\r\n/g, "\n");
        let out = consoleText;
        for (const ch of text) {
            if (ch === "\b")
                out = out.slice(0, -1);
            else if (ch !== "\r" && ch !== "\x07" && ch !== "\x00")
                out += ch;
        }
        consoleText = out.length > MAX_CONSOLE_CHARS ? out.slice(out.length - MAX_CONSOLE_CHARS) : out;
        if (!consoleFlushPending) {
            consoleFlushPending = true;
            window.requestAnimationFrame(consoleFlush);
        }
    }

    function consoleFlush() {
        consoleFlushPending = false;
        const pre = $("console");
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.textContent = consoleText;
        if (atBottom)
            pre.scrollTop = pre.scrollHeight;
    }

    const KEY_SEQUENCES = {
        Enter: "\r",
        Backspace: "\x7f",
        Tab: "\t",
        Escape: "\x1b",
        ArrowUp: "\x1b[A",
        ArrowDown: "\x1b[B",
        ArrowRight: "\x1b[C",
        ArrowLeft: "\x1b[D",
        Home: "\x1b[H",
        End: "\x1b[F",
        Insert: "\x1b[2~",
        Delete: "\x1b[3~",
        PageUp: "\x1b[5~",
        PageDown: "\x1b[6~",
    };

    /* Ctrl+letter by the key's place (any layout); Ctrl-] is left out: it would make
     * microvmctl leave (the Disconnect button does that). */
    function controlCharacter(event) {
        let letter = null;
        if (/^Key[A-Z]$/.test(event.code))
            letter = event.code.charAt(3);
        else if (event.key.length === 1 && /[@[\\^_]/.test(event.key))
            letter = event.key;
        return letter === null ? null : String.fromCharCode(letter.charCodeAt(0) - 64);
    }

    function keyToInput(event) {
        /* Shift+Tab leaves the console, so that a keyboard alone can get out of it. */
        if (event.key === "Tab" && event.shiftKey)
            return null;
        if (event.key in KEY_SEQUENCES)
            return KEY_SEQUENCES[event.key];
        /* AltGr arrives as Ctrl+Alt on some systems: that is a character (@, \, [ on a German
         * keyboard), not a control key. */
        const altGr = event.altKey || event.getModifierState("AltGraph");
        if (event.ctrlKey && !altGr)
            return controlCharacter(event);
        /* With Option (macOS) or AltGr the key is the character it made. */
        if (event.key.length === 1 && !event.metaKey)
            return event.key;
        return null;
    }

    function setConsoleConnected(connected, status) {
        $("console-connect").hidden = connected;
        $("console-disconnect").hidden = !connected;
        $("console-status").textContent = status;
    }

    function connectConsole() {
        const vm = vms.get(selected);
        if (!vm || consoleChannel)
            return;
        clearError();
        consoleClear();
        const channel = cockpit.channel({
            payload: "stream",
            spawn: ["microvmctl", "console", "--", checkName(vm.Name)],
            pty: true,
            window: { rows: 24, cols: 100 },
            err: "out",
            ...AS_ADMIN_IF_ALLOWED,
        });
        consoleChannel = channel;
        channel.addEventListener("message", (event, data) => consoleWrite(data));
        channel.addEventListener("close", (event, options) => {
            if (consoleChannel === channel)
                consoleChannel = null;
            setConsoleConnected(false, options.problem
                ? cockpit.format(_("The console closed: $0"), options.message || options.problem)
                : _("Disconnected"));
        });
        setConsoleConnected(true, cockpit.format(_("Connected to $0"), vm.Name));
        $("console").focus();
    }

    function disconnectConsole() {
        if (consoleChannel) {
            const channel = consoleChannel;
            consoleChannel = null;
            channel.close();
        }
        setConsoleConnected(false, "");
    }

    /* ---- wiring ------------------------------------------------------------------------- */

    function wireForms() {
        $("alert-close").addEventListener("click", clearError);
        $("show-create").addEventListener("click", () => showForm("create-form"));
        $("show-restore").addEventListener("click", () => showForm("restore-form"));
        $("create-cancel").addEventListener("click", () => { $("create-form").hidden = true });
        $("restore-cancel").addEventListener("click", () => { $("restore-form").hidden = true });
        $("create-form").addEventListener("submit", event => {
            event.preventDefault();
            submitForm($("create-form"), cockpit.format(_("Create $0"), $("create-name").value.trim()),
                       createArgs);
        });
        $("restore-form").addEventListener("submit", event => {
            event.preventDefault();
            const name = $("restore-name").value.trim();
            submitForm($("restore-form"), cockpit.format(_("Restore $0"), name), () => {
                const args = ["restore"];
                if ($("restore-resume").checked)
                    args.push("--resume");
                return args.concat(["--", checkName(name), checkPath($("restore-dir").value.trim())]);
            });
        });
        $("snapshot-form").addEventListener("submit", event => {
            event.preventDefault();
            const vm = vms.get(selected);
            if (!vm)
                return;
            submitForm($("snapshot-form"), cockpit.format(_("Snapshot of $0"), vm.Name), () => {
                const args = ["snapshot"];
                if ($("snapshot-leave-paused").checked)
                    args.push("--leave-paused");
                return args.concat(["--", checkName(vm.Name), checkPath($("snapshot-dir").value.trim())]);
            }, { keepOpen: true });
        });
    }

    function wireConsole() {
        $("details-close").addEventListener("click", closeDetails);
        $("console-connect").addEventListener("click", connectConsole);
        $("console-disconnect").addEventListener("click", disconnectConsole);
        $("console").addEventListener("keydown", event => {
            const input = keyToInput(event);
            if (input === null || !consoleChannel)
                return;
            event.preventDefault();
            consoleChannel.send(input);
        });
        $("console").addEventListener("paste", event => {
            const text = event.clipboardData.getData("text");
            if (!consoleChannel || !text)
                return;
            event.preventDefault();
            consoleChannel.send(text.replace(/\r?\n/g, "\r"));
        });
    }

    function init() {
        document.documentElement.lang = cockpit.language;
        cockpit.translate();
        $("console").setAttribute("aria-label", _("Serial console"));
        wireForms();
        wireConsole();
        watchAdministrativeAccess();
        connect();
    }

    init();
}());

// A single-node OpenSearch on 127.0.0.1 for the Elasticsearch sink's tests,
// run from source (Java 17 single-file launch) on the jars that
// scripts/tools.sh (install_opensearch) fetches from Maven Central:
//
//   java -Xms256m -Xmx512m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
//     -cp "$STREAMSQL_OPENSEARCH_LIB/*" "$STREAMSQL_OPENSEARCH_LAUNCHER" \
//     [--parent-pid PID] [--no-stdin-watch] [--base-dir DIR] \
//     [--http-port PORT] [--log-level LEVEL] [--modules CLASS,CLASS...]
//
// (C1 only and the serial collector roughly halve the start on a busy
// two-core machine.) When the node is ready (HTTP bound, cluster yellow,
// new indices get no replicas, so they are green at once) it prints exactly
// one line on stdout, `{"url":"http://127.0.0.1:PORT","version":"2.19.1"}`,
// and nothing else there: OpenSearch's logs go to stderr (warnings and worse
// by default, `--log-level info` for more). It stops, closing the node and
// deleting the files it made, on stdin EOF (unless --no-stdin-watch), on
// SIGTERM/SIGINT, and when the process --parent-pid names is gone (checked
// every second). SIGKILL leaves the temporary directory behind.
//
// --http-port 0 (the default) lets the OS choose a free port, read back from
// the bound socket; any other value is used as given (busy: exit 1).
// --base-dir DIR keeps the node's files under DIR (default: a fresh
// temporary directory); a DIR that did not exist or was empty is removed at
// exit, otherwise only the node_1 folder made in it. --modules replaces the
// runner's module list (all of OpenSearch's bundled modules that ship as
// jars: painless, reindex, mustache, ...), e.g.
// `org.opensearch.transport.Netty4Plugin,org.opensearch.analysis.common.CommonAnalysisPlugin,org.opensearch.index.mapper.MapperExtrasPlugin`
// starts about 4 s sooner; Netty4Plugin (HTTP) must be in it.
//
// Nothing here is built into streamsql.

import java.io.FileOutputStream;
import java.io.FileDescriptor;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Comparator;
import java.util.Optional;
import java.util.stream.Stream;

import org.codelibs.opensearch.runner.OpenSearchRunner;
import org.opensearch.Version;
import org.opensearch.common.settings.Settings;
import org.opensearch.core.common.transport.TransportAddress;
import org.opensearch.http.HttpServerTransport;

public class Launcher {
    // The real stdout, for the one ready line; System.out is pointed at
    // stderr before anything else runs, so nothing else can reach it.
    private static final PrintStream READY =
            new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
    // The real stderr, for the launcher's own messages: OpenSearch points
    // System.out and System.err at loggers once it configures logging.
    private static final PrintStream ERR =
            new PrintStream(new FileOutputStream(FileDescriptor.err), true, StandardCharsets.UTF_8);

    private static final Object LOCK = new Object();
    private static OpenSearchRunner runner;
    private static Path baseDir;
    private static Path removeAtExit;
    private static boolean stopped;

    public static void main(String[] args) throws Exception {
        long mainAt = sinceJvmStart(); // after the source launcher compiled this file
        System.setOut(System.err);
        // As OpenSearch's own launcher does: log4j must not stop itself
        // before the node has logged its shutdown.
        System.setProperty("log4j.shutdownHookEnabled", "false");
        System.setProperty("log4j2.disable.jmx", "true");

        long parentPid = -1;
        boolean stdinWatch = true;
        String baseDirArg = null;
        int httpPort = 0;
        String logLevel = "warn";
        String modules = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--parent-pid": parentPid = Long.parseLong(value(args, ++i)); break;
                case "--no-stdin-watch": stdinWatch = false; break;
                case "--base-dir": baseDirArg = value(args, ++i); break;
                case "--http-port": httpPort = Integer.parseInt(value(args, ++i)); break;
                case "--log-level": logLevel = value(args, ++i); break;
                case "--modules": modules = value(args, ++i); break;
                default:
                    ERR.println("unknown argument: " + args[i]);
                    System.exit(2);
            }
        }

        Runtime.getRuntime().addShutdownHook(new Thread(Launcher::stop, "opensearch-launcher-stop"));
        if (stdinWatch) {
            daemon("opensearch-launcher-stdin", () -> {
                try {
                    InputStream in = System.in;
                    byte[] buf = new byte[256];
                    while (in.read(buf) >= 0) {
                        // input is ignored; only its end matters
                    }
                } catch (IOException e) {
                    // treated as EOF
                }
                ERR.println("opensearch launcher: stdin closed, stopping");
                System.exit(0);
            });
        }
        if (parentPid > 0) {
            final long pid = parentPid;
            daemon("opensearch-launcher-parent", () -> {
                while (true) {
                    Optional<ProcessHandle> parent = ProcessHandle.of(pid);
                    if (parent.isEmpty() || !parent.get().isAlive()) {
                        ERR.println("opensearch launcher: parent " + pid + " is gone, stopping");
                        System.exit(0);
                    }
                    if (!sleep(1000)) {
                        return;
                    }
                }
            });
        }

        try {
            String url = start(baseDirArg, httpPort, logLevel, modules);
            ERR.println("opensearch launcher: ready at " + url + ", " + sinceJvmStart()
                    + " ms after JVM start (launcher compiled in " + mainAt + " ms)");
            READY.println("{\"url\":\"" + url + "\",\"version\":\"" + Version.CURRENT + "\"}");
            READY.flush();
        } catch (Throwable e) {
            ERR.println("opensearch launcher: failed to start");
            e.printStackTrace(ERR);
            System.exit(1);
        }
        while (sleep(60_000)) {
            // the node's threads keep the JVM alive; this one just waits
        }
    }

    private static String start(String baseDirArg, int httpPort, String logLevel, String modules) throws Exception {
        synchronized (LOCK) {
            if (stopped) {
                throw new IllegalStateException("stopped before start");
            }
            if (baseDirArg == null) {
                baseDir = Files.createTempDirectory("streamsql-opensearch").toAbsolutePath();
                removeAtExit = baseDir;
            } else {
                baseDir = Paths.get(baseDirArg).toAbsolutePath();
                boolean fresh = !Files.exists(baseDir) || isEmptyDir(baseDir);
                Files.createDirectories(baseDir);
                removeAtExit = fresh ? baseDir : baseDir.resolve("node_1");
            }
            // The runner copies its own log4j2.properties (console on stdout
            // plus log files) only when none is there: this one logs to
            // stderr only.
            Path conf = baseDir.resolve("node_1").resolve("config");
            Files.createDirectories(conf);
            Files.writeString(conf.resolve("log4j2.properties"), log4jProperties(logLevel));
        }

        final String port = String.valueOf(httpPort);
        OpenSearchRunner r = new OpenSearchRunner();
        synchronized (LOCK) {
            if (stopped) {
                throw new IllegalStateException("stopped before start");
            }
            runner = r;
        }
        // Without this the runner probes 9201..9299 for a free port itself
        // (and fails when they are taken); http.port below decides instead,
        // 0 letting the OS pick one when binding, so there is no race.
        r.setMaxHttpPort(-1);
        r.onBuild((number, settings) -> {
            settings.put("network.host", "127.0.0.1");
            settings.put("http.port", port);
            settings.put("transport.port", "0");
            settings.put("discovery.type", "single-node");
            settings.putList("node.roles", "cluster_manager", "data", "ingest");
            settings.put("cluster.routing.allocation.disk.threshold_enabled", false);
            // One node: replicas could never be assigned, so indices
            // default to none and go green at once.
            settings.put("cluster.default_number_of_replicas", 0);
            settings.put("action.auto_create_index", true);
        });
        OpenSearchRunner.Configs configs = OpenSearchRunner.newConfigs()
                .basePath(baseDir.toString())
                .numOfNode(1)
                .clusterName("streamsql-test")
                .useLogger();
        if (modules != null) {
            configs.moduleTypes(modules);
        }
        r.build(configs);
        r.ensureYellow();
        // Also persistent, so that it is visible in _cluster/settings.
        r.admin().cluster().prepareUpdateSettings()
                .setPersistentSettings(Settings.builder().put("cluster.default_number_of_replicas", 0))
                .get();

        TransportAddress bound = r.getInstance(HttpServerTransport.class).boundAddress().publishAddress();
        return "http://127.0.0.1:" + bound.getPort();
    }

    private static void stop() {
        synchronized (LOCK) {
            if (stopped) {
                return;
            }
            stopped = true;
        }
        // Never hang the JVM's exit on a node that will not close.
        Thread watchdog = daemon("opensearch-launcher-watchdog", () -> {
            if (!sleep(30_000)) {
                return;
            }
            ERR.println("opensearch launcher: node did not close in 30 s, halting");
            Runtime.getRuntime().halt(1);
        });
        try {
            if (runner != null) {
                runner.close();
            }
        } catch (Throwable e) {
            ERR.println("opensearch launcher: closing the node failed: " + e);
        }
        if (removeAtExit != null) {
            deleteTree(removeAtExit);
        }
        watchdog.interrupt();
    }

    private static long sinceJvmStart() {
        return System.currentTimeMillis() - java.lang.management.ManagementFactory.getRuntimeMXBean().getStartTime();
    }

    private static String log4jProperties(String level) {
        return String.join("\n",
                "status = error",
                "appender.console.type = Console",
                "appender.console.name = console",
                "appender.console.target = SYSTEM_ERR",
                "appender.console.layout.type = PatternLayout",
                "appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] %m%n",
                "rootLogger.level = " + level,
                "rootLogger.appenderRef.console.ref = console",
                // Warnings that a single test node always logs.
                "logger.allocation.name = org.opensearch.cluster.routing.allocation.AllocationService",
                "logger.allocation.level = error",
                "logger.dangling.name = org.opensearch.gateway.DanglingIndicesState",
                "logger.dangling.level = error",
                // Deprecations become `Warning` response headers, as on a
                // real server; they are not logged.
                "appender.header_warning.type = HeaderWarningAppender",
                "appender.header_warning.name = header_warning",
                "logger.deprecation.name = org.opensearch.deprecation",
                "logger.deprecation.level = deprecation",
                "logger.deprecation.appenderRef.header_warning.ref = header_warning",
                "logger.deprecation.additivity = false",
                "");
    }

    private static void deleteTree(Path root) {
        if (!Files.exists(root)) {
            return;
        }
        try (Stream<Path> paths = Files.walk(root)) {
            paths.sorted(Comparator.reverseOrder()).forEach(p -> {
                try {
                    Files.deleteIfExists(p);
                } catch (IOException e) {
                    ERR.println("opensearch launcher: cannot delete " + p + ": " + e);
                }
            });
        } catch (IOException e) {
            ERR.println("opensearch launcher: cannot delete " + root + ": " + e);
        }
    }

    private static boolean isEmptyDir(Path dir) throws IOException {
        if (!Files.isDirectory(dir)) {
            return false;
        }
        try (Stream<Path> entries = Files.list(dir)) {
            return entries.findAny().isEmpty();
        }
    }

    private static String value(String[] args, int i) {
        if (i >= args.length) {
            ERR.println("missing value after " + args[i - 1]);
            System.exit(2);
        }
        return args[i];
    }

    private static Thread daemon(String name, Runnable body) {
        Thread t = new Thread(body, name);
        t.setDaemon(true);
        t.start();
        return t;
    }

    /** Sleeps; false when interrupted. */
    private static boolean sleep(long millis) {
        try {
            Thread.sleep(millis);
            return true;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }
}

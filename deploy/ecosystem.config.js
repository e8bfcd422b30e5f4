// PM2: `pm2 start deploy/ecosystem.config.js` on each VPS (set SUPAWORKER_WORKER_ID per host).
// Secrets come from the environment (or /etc/supaworker.env loaded by your shell), not this file.
module.exports = {
  apps: [
    {
      name: "worker-" + (process.env.SUPAWORKER_WORKER_ID || "vps"),
      script: "supaworker",
      args: "run --handler myapp.processing:process_user_document --http-port 9464",
      interpreter: "none",
      // Longer than --shutdown-timeout (30 s) so a draining worker is not SIGKILLed.
      kill_timeout: 45000,
      autorestart: true,
      // Exit code 2 = configuration error: restarting will not fix it.
      stop_exit_codes: [2],
      env: { SUPAWORKER_LOG_FORMAT: "json" },
    },
  ],
};

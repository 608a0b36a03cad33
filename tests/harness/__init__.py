"""Real-service test harness: throwaway MariaDB and ZooKeeper servers and
Docker node containers with systemd and sshd. Used by tests/ and bench/."""

/*
 * A librdkafka mock cluster (real Kafka-protocol brokers on 127.0.0.1) for streamstate's Kafka tests
 * and benchmark. Started by test/kafka/support/mock-cluster.ts, which compiles this file with cc.
 *
 *   mock-cluster <brokers>
 *
 * Prints "BOOTSTRAP <host:port,...>" once the cluster is up, then reads commands from stdin, one a line,
 * answering each with "OK" or "ERR <reason>":
 *
 *   create <topic> <partitions>     creates a topic (replication factor 1)
 *   error <topic> <code>            makes the brokers answer requests for the topic with a Kafka error
 *                                   code (3 = UNKNOWN_TOPIC_OR_PARTITION: the mock otherwise creates
 *                                   any topic a metadata request names, so this is how a missing topic looks)
 *   request-errors <apiKey> <count> <code>
 *                                   the next <count> requests of API <apiKey> (any client) are answered
 *                                   with error <code> (14 = SyncGroup, 42 = INVALID_REQUEST)
 *
 * Stops (and destroys the cluster) when stdin closes or on SIGTERM/SIGINT.
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t stop = 0;

static void on_signal(int sig) {
        (void)sig;
        stop = 1;
        /* Closing stdin makes the fgets below return. */
        fclose(stdin);
}

int main(int argc, char **argv) {
        int brokers = argc > 1 ? atoi(argv[1]) : 3;
        char errstr[512];
        char line[1024];
        rd_kafka_conf_t *conf;
        rd_kafka_t *rk;
        rd_kafka_mock_cluster_t *mcluster;

        if (brokers < 1) {
                fprintf(stderr, "mock-cluster: brokers must be >= 1\n");
                return 2;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);

        conf = rd_kafka_conf_new();
        /* The handle only hosts the mock cluster's thread; keep its own logging quiet. */
        rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr));
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (!rk) {
                fprintf(stderr, "mock-cluster: rd_kafka_new failed: %s\n", errstr);
                return 1;
        }
        mcluster = rd_kafka_mock_cluster_new(rk, brokers);
        if (!mcluster) {
                fprintf(stderr, "mock-cluster: rd_kafka_mock_cluster_new failed\n");
                rd_kafka_destroy(rk);
                return 1;
        }
        printf("BOOTSTRAP %s\n", rd_kafka_mock_cluster_bootstraps(mcluster));

        while (!stop && fgets(line, sizeof(line), stdin)) {
                char topic[512];
                int partitions = 0, api = 0, count = 0, code = 0;
                if (sscanf(line, "create %511s %d", topic, &partitions) == 2) {
                        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(mcluster, topic, partitions, 1);
                        if (err)
                                printf("ERR %s\n", rd_kafka_err2str(err));
                        else
                                printf("OK\n");
                } else if (sscanf(line, "error %511s %d", topic, &partitions) == 2) {
                        rd_kafka_mock_topic_set_error(mcluster, topic, (rd_kafka_resp_err_t)partitions);
                        printf("OK\n");
                } else if (sscanf(line, "request-errors %d %d %d", &api, &count, &code) == 3 && count > 0 &&
                           count <= 64) {
                        rd_kafka_resp_err_t errors[64];
                        for (int i = 0; i < count; i++)
                                errors[i] = (rd_kafka_resp_err_t)code;
                        rd_kafka_mock_push_request_errors_array(mcluster, (int16_t)api, (size_t)count, errors);
                        printf("OK\n");
                } else {
                        printf("ERR unknown command\n");
                }
        }

        rd_kafka_mock_cluster_destroy(mcluster);
        rd_kafka_destroy(rk);
        return 0;
}

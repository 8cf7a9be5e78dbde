{{/* Names and labels. */}}

{{- define "ibkr-workers.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release's full name, at most 36 characters: the StatefulSet "<fullname>-order-consumer" must stay
within 52, since Kubernetes appends an 11-character hash to it in the controller-revision-hash label
(63 at most).
*/}}
{{- define "ibkr-workers.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 36 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 36 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 36 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ibkr-workers.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ibkr-workers.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ibkr-workers.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ibkr-workers.labels" -}}
helm.sh/chart: {{ include "ibkr-workers.chart" . }}
{{ include "ibkr-workers.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ibkr-workers
{{- end -}}

{{- define "ibkr-workers.orderConsumer.name" -}}
{{- printf "%s-order-consumer" (include "ibkr-workers.fullname" .) -}}
{{- end -}}

{{- define "ibkr-workers.instrumentSync.name" -}}
{{- printf "%s-instrument-sync" (include "ibkr-workers.fullname" .) -}}
{{- end -}}

{{- define "ibkr-workers.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ibkr-workers.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ibkr-workers.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
The settings every container gets, as a YAML map of environment variable -> string. The ConfigMap holds
them for the workers; the hook Jobs (which run before the ConfigMap exists) get them inline.
*/}}
{{- define "ibkr-workers.settings" -}}
{{- $v := .Values -}}
{{- $s := dict
  "KAFKA_BOOTSTRAP_SERVERS" $v.kafka.bootstrapServers
  "KAFKA_SECURITY_PROTOCOL" $v.kafka.securityProtocol
  "KAFKA_CONSUMER_GROUP" $v.kafka.consumerGroup
  "KAFKA_SESSION_TIMEOUT_MS" (toString (int64 $v.kafka.sessionTimeoutMs))
  "IBKR_HOST" $v.ibkr.host
  "IBKR_API" $v.ibkr.api
  "IBKR_TRADING_MODE" $v.ibkr.tradingMode
  "IBKR_ACCOUNTS" $v.ibkr.accounts
  "IBKR_READONLY" (toString $v.ibkr.readonly)
  "IBKR_PACING_PER_SECOND" (toString $v.ibkr.pacingPerSecond)
  "IBKR_CONNECT_TIMEOUT" (toString $v.ibkr.connectTimeout)
  "IBKR_MARKET_DATA_TYPE" $v.ibkr.marketDataType
  "IBKR_MARKET_DATA_LINES" (toString (int64 $v.ibkr.marketDataLines))
  "IBKR_MARKET_DATA_IDLE" (toString $v.ibkr.marketDataIdle)
  "KILL_SWITCH" (toString $v.config.killSwitch)
  "HEALTH_PORT" (toString (int64 $v.config.healthPort))
  "ADMIN_BIND" $v.config.adminBind
  "ADMIN_PORT" (toString (int64 $v.config.adminPort))
  "HEALTH_INTERVAL" (toString $v.config.healthInterval)
  "LOG_LEVEL" $v.config.logLevel
  "DATABASE_POOL_SIZE" (toString (int64 $v.config.databasePoolSize))
  "INSTRUMENT_SYNC_INTERVAL" (toString $v.instrumentSync.interval)
-}}
{{- with $v.kafka.saslMechanism }}{{ $_ := set $s "KAFKA_SASL_MECHANISM" . }}{{ end -}}
{{- with $v.database.host }}
{{- $url := printf "postgresql://%s@%s:%d/%s?sslmode=%s" ($v.database.user | urlquery) . (int64 $v.database.port) ($v.database.name | urlquery) $v.database.sslmode -}}
{{- $_ := set $s "DATABASE_URL" $url -}}
{{- end -}}
{{- with $v.kafka.tls.existingSecret }}
{{- $_ := set $s "KAFKA_SSL_CAFILE" (printf "/etc/kafka-tls/%s" $v.kafka.tls.caKey) }}
{{- if $v.kafka.tls.certKey }}
{{- $_ := set $s "KAFKA_SSL_CERTFILE" (printf "/etc/kafka-tls/%s" $v.kafka.tls.certKey) }}
{{- $_ := set $s "KAFKA_SSL_KEYFILE" (printf "/etc/kafka-tls/%s" $v.kafka.tls.keyKey) }}
{{- end }}
{{- end -}}
{{- with $v.ibkr.port }}{{ $_ := set $s "IBKR_PORT" (toString (int64 .)) }}{{ end -}}
{{- if $v.ibkr.liveConfirm }}{{ $_ := set $s "IBKR_LIVE_CONFIRM" "yes" }}{{ end -}}
{{- with $v.config.tradingState }}{{ $_ := set $s "TRADING_STATE" . }}{{ end -}}
{{- with $v.config.maxOrderQuantity }}{{ $_ := set $s "MAX_ORDER_QUANTITY" (toString .) }}{{ end -}}
{{- with $v.config.maxOrderNotional }}{{ $_ := set $s "MAX_ORDER_NOTIONAL" (toString .) }}{{ end -}}
{{- with $v.config.maxOrderAge }}{{ $_ := set $s "MAX_ORDER_AGE" (toString .) }}{{ end -}}
{{- with $v.config.priceBand }}{{ $_ := set $s "PRICE_BAND" (toString .) }}{{ end -}}
{{- with $v.config.maxPosition }}{{ $_ := set $s "MAX_POSITION" (toString .) }}{{ end -}}
{{- with $v.config.maxOrdersPerSecond }}{{ $_ := set $s "MAX_ORDERS_PER_SECOND" (toString .) }}{{ end -}}
{{- range $key, $name := $v.topics }}
{{- if $name }}{{ $_ := set $s (printf "TOPIC_%s" ($key | snakecase | upper)) $name }}{{ end }}
{{- end -}}
{{- /* extraConfig last: it overrides what the chart derives. */ -}}
{{- range $key, $value := $v.extraConfig }}{{ $_ := set $s $key (toString $value) }}{{ end -}}
{{- toYaml $s -}}
{{- end -}}

{{/*
The environment entries read from the existing Secret: the database password alone when the chart builds
DATABASE_URL from database.*, else the whole DATABASE_URL.
*/}}
{{- define "ibkr-workers.secretEnv" -}}
{{- if .Values.database.host -}}
- name: DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.existingSecret }}
      key: {{ .Values.secrets.databasePasswordKey }}
{{- else -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.existingSecret }}
      key: {{ .Values.secrets.databaseUrlKey }}
{{- end }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.existingSecret }}
      key: {{ .Values.secrets.kafkaSaslUsernameKey }}
      optional: true
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.existingSecret }}
      key: {{ .Values.secrets.kafkaSaslPasswordKey }}
      optional: true
- name: ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.existingSecret }}
      key: {{ .Values.secrets.adminTokenKey }}
      optional: true
- name: SCHEMA_REGISTRY_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.existingSecret }}
      key: {{ .Values.secrets.schemaRegistryUrlKey }}
      optional: true
- name: KAFKA_SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.existingSecret }}
      key: {{ .Values.secrets.kafkaSslKeyPasswordKey }}
      optional: true
{{- end -}}

{{/* The /tmp volume of every pod (the root file system is read-only). */}}
{{- define "ibkr-workers.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{- define "ibkr-workers.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* The Kafka TLS files (kafka.tls.existingSecret), when there are any: volume and mount. */}}
{{- define "ibkr-workers.kafkaTlsVolume" -}}
{{- with .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end -}}
{{- end -}}

{{- define "ibkr-workers.kafkaTlsMount" -}}
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/kafka-tls
  readOnly: true
{{- end -}}
{{- end -}}

{{/* Refuse values that would make two worker processes share an IBKR client id. */}}
{{- define "ibkr-workers.validate" -}}
{{- $base := int .Values.orderConsumer.clientIdBase -}}
{{- $last := add $base (int .Values.orderConsumer.replicas) -}}
{{- if .Values.instrumentSync.enabled -}}
{{- $sync := int .Values.instrumentSync.clientId -}}
{{- if and (ge $sync $base) (lt $sync $last) -}}
{{- fail (printf "instrumentSync.clientId %d is inside the order-consumer's client ids %d..%d: choose one outside" $sync $base (sub $last 1)) -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.ibkr.tradingMode "live") (not .Values.ibkr.liveConfirm) -}}
{{- fail "ibkr.tradingMode=live needs ibkr.liveConfirm=true (the workers refuse live mode without IBKR_LIVE_CONFIRM=yes)" -}}
{{- end -}}
{{- if and (eq .Values.ibkr.tradingMode "live") (eq .Values.kafka.securityProtocol "PLAINTEXT") (not .Values.kafka.allowPlaintextLive) -}}
{{- fail "ibkr.tradingMode=live with kafka.securityProtocol=PLAINTEXT: whoever reaches the brokers could place live orders; use SASL_SSL (or SSL with client certificates) and ACLs, or set kafka.allowPlaintextLive=true" -}}
{{- end -}}
{{- if and .Values.kafka.tls.certKey (not .Values.kafka.tls.keyKey) -}}
{{- fail "kafka.tls.keyKey is required with kafka.tls.certKey (mutual TLS needs the client certificate and its key)" -}}
{{- end -}}
{{- if and .Values.kafka.tls.existingSecret (not (hasSuffix "SSL" .Values.kafka.securityProtocol)) -}}
{{- fail "kafka.tls.existingSecret is set but kafka.securityProtocol is not SSL or SASL_SSL" -}}
{{- end -}}
{{- if and (hasPrefix "SASL" .Values.kafka.securityProtocol) (not .Values.kafka.saslMechanism) -}}
{{- fail "kafka.saslMechanism is required when kafka.securityProtocol is SASL_PLAINTEXT or SASL_SSL" -}}
{{- end -}}
{{- end -}}

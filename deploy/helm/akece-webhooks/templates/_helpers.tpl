{{/* Names and labels. */}}
{{- define "akece.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "akece.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "akece.selectorLabels" -}}
app.kubernetes.io/name: {{ include "akece.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "akece.labels" -}}
{{ include "akece.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: akece-webhooks
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "akece.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Secret names. */}}
{{- define "akece.apiSecret" -}}
{{- .Values.apiTokens.existingSecret | default (printf "%s-api-tokens" (include "akece.fullname" .)) -}}
{{- end -}}

{{- define "akece.saslSecret" -}}
{{- .Values.kafka.sasl.existingSecret | default (printf "%s-kafka-sasl" (include "akece.fullname" .)) -}}
{{- end -}}

{{- define "akece.usesSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end -}}
{{- end -}}

{{- define "akece.usesTls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end -}}
{{- end -}}

{{- define "akece.kafkaFiles" -}}
{{- if or (include "akece.usesSasl" .) .Values.kafka.ssl.caSecret .Values.kafka.ssl.clientCertSecret }}true{{ end -}}
{{- end -}}

{{/* Retry tier topic suffix of a delay in whole seconds: 5 -> 5s, 300 -> 5m, 7200 -> 2h, 86400 -> 1d. */}}
{{- define "akece.delay" -}}
{{- $s := int . -}}
{{- if eq (mod $s 86400) 0 }}{{ div $s 86400 }}d
{{- else if eq (mod $s 3600) 0 }}{{ div $s 3600 }}h
{{- else if eq (mod $s 60) 0 }}{{ div $s 60 }}m
{{- else }}{{ $s }}s{{ end -}}
{{- end -}}

{{/* The environment of every akece-webhooks container. */}}
{{- define "akece.env" -}}
- name: AKECE_KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: AKECE_KAFKA_PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
- name: AKECE_KAFKA_REPLICATION_FACTOR
  value: {{ .Values.kafka.replicationFactor | quote }}
- name: AKECE_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if include "akece.usesSasl" . }}
- name: AKECE_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: AKECE_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "akece.saslSecret" . }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: AKECE_KAFKA_SASL_PASSWORD_FILE
  value: /etc/akece-webhooks/kafka/sasl-password
{{- end }}
{{- if include "akece.usesTls" . }}
- name: AKECE_KAFKA_SSL_CHECK_HOSTNAME
  value: {{ .Values.kafka.ssl.checkHostname | quote }}
{{- if .Values.kafka.ssl.caSecret }}
- name: AKECE_KAFKA_SSL_CA_FILE
  value: /etc/akece-webhooks/kafka/ca.crt
{{- end }}
{{- if .Values.kafka.ssl.clientCertSecret }}
- name: AKECE_KAFKA_SSL_CERT_FILE
  value: /etc/akece-webhooks/kafka/client.crt
- name: AKECE_KAFKA_SSL_KEY_FILE
  value: /etc/akece-webhooks/kafka/client.key
{{- end }}
{{- end }}
- name: AKECE_TOPIC_PREFIX
  value: {{ .Values.topicPrefix | quote }}
- name: AKECE_RETRY_SCHEDULE
  value: {{ join "," .Values.retrySchedule | quote }}
- name: AKECE_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: AKECE_LOG_FORMAT
  value: json
- name: AKECE_RUNBOOK_BASE_URL
  value: {{ .Values.runbookBaseUrl | quote }}
- name: AKECE_METRICS_PORT
  value: {{ .Values.metricsPort | quote }}
{{- range $name, $value := .Values.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* The Kafka credential files: SASL password, CA, client certificate and key, in one directory. */}}
{{- define "akece.kafkaVolume" -}}
- name: kafka-credentials
  projected:
    defaultMode: 0440
    sources:
      {{- if include "akece.usesSasl" . }}
      - secret:
          name: {{ include "akece.saslSecret" . }}
          items:
            - key: {{ .Values.kafka.sasl.passwordKey }}
              path: sasl-password
      {{- end }}
      {{- if .Values.kafka.ssl.caSecret }}
      - secret:
          name: {{ .Values.kafka.ssl.caSecret }}
          items:
            - key: {{ .Values.kafka.ssl.caKey }}
              path: ca.crt
      {{- end }}
      {{- if .Values.kafka.ssl.clientCertSecret }}
      - secret:
          name: {{ .Values.kafka.ssl.clientCertSecret }}
          items:
            - key: {{ .Values.kafka.ssl.certKey }}
              path: client.crt
            - key: {{ .Values.kafka.ssl.keyKey }}
              path: client.key
      {{- end }}
{{- end -}}

# The drain the deregistration Lambda sends, as a named document for operators (ssm/README
# in infra/README.md).
resource "aws_ssm_document" "drain" {
  name            = "${var.name}-drain"
  document_type   = "Command"
  document_format = "JSON"
  content         = file("${path.module}/ssm/warmfleet-drain.json")
  tags            = local.tags
}

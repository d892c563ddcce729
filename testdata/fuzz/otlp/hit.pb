
µ²¯*softprobe.injectJ 
http.response.status_codeÉJ7
!http.response.header.content-type
application/jsonJ"
http.response.header.x-mock
1J1
http.response.body
{"amount":42,"id":"ch_1"}J
sp.decision
mockJ
sp.rule.name
	charge-okJ
sp.rule.layer	
sessionJ
sp.session.revision